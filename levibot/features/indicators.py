"""Incremental indicators at any period: EMA, MACD, RSI and ATR, O(1) per bar.

These are the indicator kernels of the feature module, one class each and parameterised, for
whoever needs a period the feature schema does not have (a rule strategy's own EMA 10/30, say).
``FeatureState`` runs the same arithmetic inlined at the schema's fixed periods, for speed; a
test pins the two together bit for bit and both to TA-Lib. Conventions (TA-Lib's):

- an EMA of span ``n`` is seeded with the SMA of its first ``n`` inputs (defined from input
  index ``n - 1``), then ``ema += (x - ema) · 2 / (n + 1)``;
- MACD(fast, slow, signal): the slow EMA as above; the fast EMA is seeded with the SMA of the
  ``fast`` closes ending where the slow one seeds; the signal line is the EMA of the MACD line
  seeded with its first ``signal`` values;
- RSI and ATR use Wilder's smoothing after an SMA seed of ``period`` values (RSI from the
  close-to-close changes of bars 1..period; a window without any movement reads 50, where
  TA-Lib says 0); the true range of the first bar is not counted.

Each ``update`` returns the value, NaN until it is defined; ``warmup`` is the number of inputs
after which it is (the value of input index ``warmup - 1`` is the first defined one).
"""

from __future__ import annotations

import math

_NAN = math.nan


def _check_period(name: str, value: int, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


class Ema:
    """Exponential moving average of span ``span`` (TA-Lib's EMA)."""

    __slots__ = ("_k", "_n", "_v", "span", "warmup")

    def __init__(self, span: int) -> None:
        self.span = _check_period("EMA span", span)
        self.warmup = span
        self._k = 2.0 / (span + 1)
        self._n = 0
        self._v = 0.0  # the running sum until seeded, then the EMA

    def update(self, x: float) -> float:
        """Fold in the next value; return the EMA (NaN during warm-up)."""
        n, span = self._n, self.span
        self._n = n + 1
        if n >= span:
            self._v = (x - self._v) * self._k + self._v
        elif n == span - 1:
            self._v = (self._v + x) / span
        else:
            self._v += x
            return _NAN
        return self._v


class Macd:
    """MACD line, signal line and histogram (TA-Lib's MACD with EMA seeds)."""

    __slots__ = ("_fast", "_kf", "_ks", "_n", "_sig", "_slow", "fast", "signal", "slow", "warmup")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = _check_period("MACD fast period", fast)
        self.slow = _check_period("MACD slow period", slow)
        self.signal = _check_period("MACD signal period", signal)
        if fast >= slow:
            raise ValueError(f"MACD fast period {fast} must be below the slow period {slow}")
        self.warmup = slow + signal - 1
        self._slow = Ema(slow)
        self._kf = 2.0 / (fast + 1)
        self._ks = 2.0 / (signal + 1)
        self._n = 0
        self._fast = 0.0
        self._sig = 0.0

    def update(self, c: float) -> tuple[float, float, float]:
        """Fold in the next close; return ``(macd, signal, histogram)``, NaN until defined."""
        n, fast, slow, signal = self._n, self.fast, self.slow, self.signal
        self._n = n + 1
        e_slow = self._slow.update(c)
        mf = self._fast
        if n >= slow:
            mf = (c - mf) * self._kf + mf
        elif n == slow - 1:
            mf = (mf + c) / fast
        elif n >= slow - fast:
            mf += c
        self._fast = mf
        if n < slow - 1:
            return _NAN, _NAN, _NAN
        macd = mf - e_slow
        sig = self._sig
        first = slow - 1 + signal - 1  # where the signal line seeds
        if n > first:
            sig = (macd - sig) * self._ks + sig
        elif n == first:
            sig = (sig + macd) / signal
        else:
            sig += macd
        self._sig = sig
        if n < first:
            return macd, _NAN, _NAN
        return macd, sig, macd - sig


class Rsi:
    """Relative strength index over ``period`` close-to-close changes, Wilder-smoothed."""

    __slots__ = ("_g", "_n", "_pc", "_s", "period", "warmup")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("RSI period", period)
        self.warmup = period + 1
        self._n = 0
        self._pc = 0.0
        self._g = self._s = 0.0

    def update(self, c: float) -> float:
        """Fold in the next close; return the RSI in [0, 100] (NaN during warm-up)."""
        n, p = self._n, self.period
        self._n = n + 1
        d = c - self._pc if n else 0.0
        self._pc = c
        g, s = self._g, self._s
        if n > p:
            g *= p - 1.0
            s *= p - 1.0
            if d < 0.0:
                s -= d
            else:
                g += d
            g /= p
            s /= p
        else:
            if d < 0.0:
                s -= d
            else:
                g += d
            if n == p:
                g /= p
                s /= p
        self._g, self._s = g, s
        if n < p:
            return _NAN
        t = g + s
        return 100.0 * (g / t) if t > 0.0 else 50.0


class Atr:
    """Average true range over ``period`` bars, Wilder-smoothed."""

    __slots__ = ("_atr", "_n", "_pc", "period", "warmup")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("ATR period", period)
        self.warmup = period + 1
        self._n = 0
        self._pc = 0.0
        self._atr = 0.0

    def update(self, h: float, low: float, c: float) -> float:
        """Fold in the next bar's high, low and close; return the ATR (NaN during warm-up)."""
        n, p = self._n, self.period
        self._n = n + 1
        pc = self._pc if n else c
        self._pc = c
        tr = (h if h > pc else pc) - (low if low < pc else pc)
        atr = self._atr
        if n > p:
            atr = (atr * (p - 1.0) + tr) / p
        elif n > 0:
            atr += tr
            if n == p:
                atr /= p
        self._atr = atr
        return atr if n >= p else _NAN
