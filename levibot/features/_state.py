"""The incremental feature kernel: O(1) per bar, plain Python floats, one method.

Speed matters here (every bar of every symbol passes through ``update``), so the kernel is one
flat method over ``__slots__`` with the periods written in as constants; ``_schema`` holds the
same numbers for the hash and a test ties them together. The arithmetic follows TA-Lib's C code
operation for operation (seeds, running sums, Wilder smoothing) so the numbers agree to the last
bit or nearly; where this module departs from TA-Lib it says so.
"""

from __future__ import annotations

import math
from collections import deque

from levibot.features._schema import FIRST_VALID, NAMES, WARMUP

_NAN = math.nan
_log = math.log
_sqrt = math.sqrt
_fsum = math.fsum

#: The vector returned for a rejected bar, and the mask value during warm-up.
NAN_ROW: tuple[float, ...] = (_NAN,) * len(NAMES)

# EMA smoothing factors, TA-Lib's PER_TO_K: 2 / (span + 1).
_K5, _K9, _K12, _K21 = 2.0 / 6, 2.0 / 10, 2.0 / 13, 2.0 / 22
_K26, _K50, _K100, _K200 = 2.0 / 27, 2.0 / 51, 2.0 / 101, 2.0 / 201
# A variance below this fraction of the mean square is rounding noise of a flat window.
_REL_ZERO = 1e-10
# Nothing real is this large; rejecting it keeps every square and sum finite, so no input
# can leave a NaN or an infinity in the state.
_MAX = 1e100
# Re-sum a window exactly when a square this many times its sum of squares passed through it.
_SPIKE = 50.0
_W = 20  # the rolling window (schema WINDOW, BB_PERIOD)


class FeatureState:
    """Incremental feature state of one symbol at one timeframe.

    ``update(open, high, low, close, volume)`` takes the next closed bar and returns the full
    vector in ``SCHEMA.names`` order, NaN where a feature is not yet defined. Input rule: a bar
    is **rejected** (state unchanged, ``rejected`` counted, the all-NaN vector returned) unless
    every price is finite and > 0, ``low <= open, close <= high`` and the volume is finite and
    >= 0, and no value reaches 1e100 (whose square would overflow). A volume of 0 is a valid
    bar: volume ratios, z-scores and the VWAP stay finite. So, once warm, every vector of
    accepted bars is finite.
    Time is not seen here: ordering (out-of-order, duplicate bars) is the caller's job.
    """

    warmup: int = WARMUP

    __slots__ = (
        "_atr", "_bd1", "_bd2", "_bk", "_bs1", "_cw",
        "_e5", "_e9", "_e12", "_e21", "_e26", "_e50", "_e100", "_e200",
        "_gain", "_loss", "_lw", "_mf", "_n", "_pc", "_pvs", "_pvw",
        "_rs1", "_rs2", "_rw", "_sig", "_vbig", "_vs1", "_vs2", "_vw", "_vz", "rejected",
    )  # fmt: skip

    def __init__(self) -> None:
        self._n = 0  # accepted bars so far
        self.rejected = 0
        self._pc = 0.0  # previous close
        self._e5 = self._e9 = self._e12 = self._e21 = 0.0  # running sums until seeded
        self._e26 = self._e50 = self._e100 = self._e200 = 0.0
        self._mf = 0.0  # MACD's own fast EMA, seeded where the slow one is (TA-Lib)
        self._sig = 0.0
        self._gain = self._loss = self._atr = 0.0
        # Windows pre-filled with 0.0: subtracting the value that leaves is then exact during
        # warm-up too (x - 0.0 == x), which reproduces TA-Lib's running sums without branches.
        self._cw: deque[float] = deque((0.0,) * _W, maxlen=_W)
        self._bs1 = self._bd1 = self._bd2 = self._bk = 0.0
        self._rw: deque[float] = deque((0.0,) * _W, maxlen=_W)
        self._rs1 = self._rs2 = 0.0
        self._vw: deque[float] = deque((0.0,) * _W, maxlen=_W)
        self._pvw: deque[float] = deque((0.0,) * _W, maxlen=_W)
        self._vs1 = self._vs2 = self._pvs = 0.0
        self._vz = 0  # consecutive zero-volume bars
        self._vbig = 0.0  # the largest square folded into the sums since they were exact
        self._lw: deque[float] = deque((_NAN,) * 25, maxlen=25)  # log closes, for ret_k

    def copy(self) -> FeatureState:
        """Return an independent copy: updating it leaves this state as it was."""
        new = FeatureState.__new__(FeatureState)
        for name in FeatureState.__slots__:
            value = getattr(self, name)
            if isinstance(value, deque):
                value = deque(value, maxlen=value.maxlen)
            setattr(new, name, value)
        return new

    @property
    def ready(self) -> bool:
        """Return True once every feature is defined (``warmup`` bars accepted)."""
        return self._n >= WARMUP

    @property
    def bars(self) -> int:
        """Return the number of bars accepted so far."""
        return self._n

    def update(self, o: float, h: float, l: float, c: float, v: float) -> tuple[float, ...]:  # noqa: E741
        """Fold in the next closed bar and return the feature vector (see the class doc)."""
        if not (0.0 < l <= o <= h < _MAX and l <= c <= h and 0.0 <= v < _MAX):
            self.rejected += 1
            return NAN_ROW
        n = self._n
        self._n = n + 1
        pc = self._pc if n else c
        self._pc = c

        # EMAs, seeded like TA-Lib with the SMA of the first `span` closes.
        e5 = self._e5
        if n >= 5:
            e5 = (c - e5) * _K5 + e5
        elif n == 4:
            e5 = (e5 + c) / 5.0
        else:
            e5 += c
        self._e5 = e5
        e9 = self._e9
        if n >= 9:
            e9 = (c - e9) * _K9 + e9
        elif n == 8:
            e9 = (e9 + c) / 9.0
        else:
            e9 += c
        self._e9 = e9
        e12 = self._e12
        if n >= 12:
            e12 = (c - e12) * _K12 + e12
        elif n == 11:
            e12 = (e12 + c) / 12.0
        else:
            e12 += c
        self._e12 = e12
        e21 = self._e21
        if n >= 21:
            e21 = (c - e21) * _K21 + e21
        elif n == 20:
            e21 = (e21 + c) / 21.0
        else:
            e21 += c
        self._e21 = e21
        e26 = self._e26
        if n >= 26:
            e26 = (c - e26) * _K26 + e26
        elif n == 25:
            e26 = (e26 + c) / 26.0
        else:
            e26 += c
        self._e26 = e26
        e50 = self._e50
        if n >= 50:
            e50 = (c - e50) * _K50 + e50
        elif n == 49:
            e50 = (e50 + c) / 50.0
        else:
            e50 += c
        self._e50 = e50
        e100 = self._e100
        if n >= 100:
            e100 = (c - e100) * _K100 + e100
        elif n == 99:
            e100 = (e100 + c) / 100.0
        else:
            e100 += c
        self._e100 = e100
        e200 = self._e200
        if n >= 200:
            e200 = (c - e200) * _K200 + e200
        elif n == 199:
            e200 = (e200 + c) / 200.0
        else:
            e200 += c
        self._e200 = e200

        # MACD(12, 26, 9) as TA-Lib: the slow EMA is ema_26; the fast one is seeded with the
        # SMA of the 12 closes ending where the slow one seeds (bars 14..25); the signal is
        # the EMA(9) of the MACD line seeded with its first 9 values (bars 25..33).
        mf = self._mf
        if n >= 26:
            mf = (c - mf) * _K12 + mf
        elif n == 25:
            mf = (mf + c) / 12.0
        elif n >= 14:
            mf += c
        self._mf = mf
        macd = mf - e26
        sig = self._sig
        if n >= 34:
            sig = (macd - sig) * _K9 + sig
        elif n == 33:
            sig = (sig + macd) / 9.0
        elif n >= 25:
            sig += macd
        self._sig = sig
        hist = macd - sig

        # RSI(14), Wilder, as TA-Lib; a window with no movement at all gives 50 (TA-Lib: 0).
        d = c - pc
        g = self._gain
        s = self._loss
        if n > 14:
            g *= 13.0
            s *= 13.0
            if d < 0.0:
                s -= d
            else:
                g += d
            g /= 14.0
            s /= 14.0
        else:
            if d < 0.0:
                s -= d
            else:
                g += d
            if n == 14:
                g /= 14.0
                s /= 14.0
        self._gain = g
        self._loss = s
        t = g + s
        rsi = 100.0 * (g / t) if t > 0.0 else 50.0

        # ATR(14), Wilder, as TA-Lib: the SMA of the true ranges of bars 1..14, then smoothed.
        tr = (h if h > pc else pc) - (l if l < pc else pc)
        atr = self._atr
        if n > 14:
            atr = (atr * 13.0 + tr) / 14.0
        elif n > 0:
            atr += tr
            if n == 14:
                atr /= 14.0
        self._atr = atr

        # Bollinger(20, 2): the middle band is TA-Lib's running-sum SMA (bit for bit). The
        # variance is taken of the closes shifted by an anchor near the mean, re-anchored and
        # summed afresh every window: mean(x^2) - mean(x)^2 on raw prices loses ~8 digits.
        cw = self._cw
        cw.append(c)
        b1 = self._bs1 + c
        mid = b1 / 20.0
        self._bs1 = b1 - cw[0]
        phase = n % _W
        if phase == _W - 1:
            k = self._bk = mid
            ds = [x - k for x in cw]
            d1 = _fsum(ds)
            d2 = _fsum([x * x for x in ds])
            old = ds[0]
        else:
            k = self._bk
            d = c - k
            d1 = self._bd1 + d
            d2 = self._bd2 + d * d
            old = cw[0] - k
        self._bd1 = d1 - old
        self._bd2 = d2 - old * old
        md = d1 / 20.0
        m2 = d2 / 20.0
        var = m2 - md * md
        std = _sqrt(var) if var > _REL_ZERO * m2 else 0.0
        band = std * 2.0
        upper = mid + band
        lower = mid - band

        # Log returns at lags 1, 3, 12, 24 and their 20-bar population std (vol_20).
        lc = _log(c)
        lw = self._lw
        lw.append(lc)
        r1 = lc - lw[-2] if n else 0.0
        r3 = lc - lw[-4]
        r12 = lc - lw[-13]
        r24 = lc - lw[0]
        rw = self._rw
        rw.append(r1)
        q1 = self._rs1 + r1
        q2 = self._rs2 + r1 * r1
        m1 = q1 / 20.0
        m2 = q2 / 20.0
        old = rw[0]
        self._rs1 = q1 - old
        self._rs2 = q2 - old * old
        var = m2 - m1 * m1
        vol = _sqrt(var) if var > _REL_ZERO * m2 else 0.0

        # Volume: 20-bar mean, z-score, ratio; VWAP of the typical price over the same bars.
        # Running sums leave rounding residue of the order of eps times the largest value
        # they ever held; after a spike has left the window that residue can swamp a quiet
        # window. So the sums are re-summed exactly when the largest square folded in since
        # the last exact sum dwarfs the window's mean square, and once per window anyway.
        pv = (h + l + c) / 3.0 * v
        vw = self._vw
        pvw = self._pvw
        vw.append(v)
        pvw.append(pv)
        vv = v * v
        big = self._vbig
        if vv > big:
            big = vv
        sv = self._vs1 + v
        sv2 = self._vs2 + vv
        spv = self._pvs + pv
        if big > _SPIKE * sv2:
            sq = [x * x for x in vw]
            sv = _fsum(vw)
            sv2 = _fsum(sq)
            spv = _fsum(pvw)
            big = max(sq)
        vmean = sv / 20.0
        v2mean = sv2 / 20.0
        vwap = spv / sv if sv > 0.0 else mid
        vz = self._vz + 1 if v == 0.0 else 0
        self._vz = vz
        if vz >= _W - 1:
            # The next window starts with nothing but zeros: make its sums exactly zero.
            self._vs1 = self._vs2 = self._pvs = big = 0.0
        elif phase == 0:
            rest = list(vw)[1:]
            sq = [x * x for x in rest]
            self._vs1 = _fsum(rest)
            self._vs2 = _fsum(sq)
            self._pvs = _fsum(list(pvw)[1:])
            big = max(sq)
        else:
            old = vw[0]
            self._vs1 = sv - old
            self._vs2 = sv2 - old * old
            self._pvs = spv - pvw[0]
        self._vbig = big
        var = v2mean - vmean * vmean
        vstd = _sqrt(var) if var > _REL_ZERO * v2mean else 0.0

        row = (
            e5, e9, e12, e21, e26, e50, e100, e200,
            rsi, macd, sig, hist, atr, upper, mid, lower, vwap, vol,
            r1, r3, r12, r24,
            (c - mid) / std if std > 0.0 else 0.0,
            (v - vmean) / vstd if vstd > 0.0 else 0.0,
            v / vmean if vmean > 0.0 else 1.0,
            c / e5, c / e9, c / e12, c / e21, c / e26, c / e50, c / e100, c / e200,
            macd / c, sig / c, hist / c, atr / c,
            (c - lower) / (upper - lower) if upper > lower else 0.5,
            (upper - lower) / mid,
            c / vwap,
            (h - l) / c,
        )  # fmt: skip
        if n >= WARMUP - 1:
            return row
        return tuple(x if n >= f else _NAN for x, f in zip(row, FIRST_VALID, strict=True))
