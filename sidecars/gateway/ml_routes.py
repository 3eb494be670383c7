"""The model routes: score, list, activate, roll back and retrain, on the registry every process
shares (``ModelBridge``)."""

from __future__ import annotations

from aiohttp import web

from levibot.messages import ActivateModel
from sidecars.gateway import schemas as s
from sidecars.gateway.errors import ApiError
from sidecars.gateway.routing import (
    Param,
    Route,
    accepted,
    audit,
    ok,
    read_body,
    send_command,
    svc,
)


async def predict(request: web.Request) -> web.Response:
    body: s.PredictRequest = await read_body(request, s.PredictRequest)
    return ok(await svc(request).ml.predict(body.features, body.values))


async def retrain(request: web.Request) -> web.Response:
    body: s.RetrainRequest = await read_body(request, s.RetrainRequest)
    services = svc(request)
    bridge = services.ml
    options = bridge.check_options(body.options)
    data = bridge.check_data(body.data)
    trainer = services.trainer or bridge.default_trainer()
    job = services.jobs.submit(
        "retrain", lambda: trainer(options) if data is None else trainer(options, data)
    )
    audit(request, "model.retrain", job_id=job.job_id, options=options, data=data)
    return ok(job, 202, {"Location": f"/retrain/{job.job_id}"})


async def retrain_status(request: web.Request) -> web.Response:
    job = svc(request).jobs.get(request.match_info["job_id"])
    if job is None:
        raise ApiError(404, "job_not_found", "no such job")
    return ok(job)


async def models(request: web.Request) -> web.Response:
    return ok(await svc(request).ml.models())


async def activate_model(request: web.Request) -> web.Response:
    body: s.ActivateModelRequest = await read_body(request, s.ActivateModelRequest)
    bridge = svc(request).ml
    if not await bridge.exists(body.model_id):
        raise ApiError(404, "model_not_found", f"model {body.model_id!r} is not registered")
    if body.role == "active":
        # The gate, then the persisted pointer (a scoring node that starts later reads it),
        # then the command that tells the running ones.
        await bridge.activate(body.model_id, force=body.force)
    cmd = await send_command(request, ActivateModel, model_id=body.model_id, role=body.role)
    audit(
        request, "model.activate", model_id=body.model_id, role=body.role, command_id=cmd.command_id
    )
    return ok(accepted(cmd), 202)


async def rollback_model(request: web.Request) -> web.Response:
    # The persisted pointer first (a scoring node that starts later reads it), then the
    # command that swaps the running ones to the model it now points at.
    model_id = await svc(request).ml.rollback()
    cmd = await send_command(request, ActivateModel, model_id=model_id, role="active")
    audit(request, "model.rollback", model_id=model_id, command_id=cmd.command_id)
    return ok(accepted(cmd), 202)


#: The model routes, in the order the OpenAPI document lists them.
ML_ROUTES: tuple[Route, ...] = (
    Route("POST", "/predict", predict, "Score a feature vector with the active model", "read",
          body=s.PredictRequest, response=s.PredictResponse, tag="models", errors=(409, 503)),
    Route("POST", "/retrain", retrain, "Start retraining in the background", "admin",
          body=s.RetrainRequest, response=s.JobView, status=202, tag="models",
          errors=(422, 503)),
    Route("GET", "/retrain/{job_id}", retrain_status, "A retraining job's status", "admin",
          response=s.JobView, params=(Param("job_id", "path", {"type": "string"}),),
          tag="models", errors=(404,)),
    Route("GET", "/models", models, "Registered models and the active one", "read",
          response=s.ModelsResponse, tag="models", errors=(503,)),
    Route("POST", "/models/activate", activate_model, "Activate a model (command)", "admin",
          body=s.ActivateModelRequest, response=s.CommandAccepted, status=202, tag="models",
          errors=(404, 409, 503)),
    Route("POST", "/models/rollback", rollback_model,
          "Re-activate the model active before (command)", "admin", response=s.CommandAccepted,
          status=202, tag="models", errors=(409, 503)),
)  # fmt: skip
