"""/v1/reports: the program report as JSON, CSV and a printable HTML page (`reports:read`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from app.deps import Principal, SessionDep, SettingsDep, require
from app.models.common import Network
from app.reports import render
from app.reports import service as svc
from app.routers.common import AUTHED, problems

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=AUTHED)

MonthQ = Annotated[str, Query(alias="from", pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                              description="The first month (YYYY-MM)")]
ToQ = Annotated[str | None, Query(alias="to", pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                                  description="The last month (YYYY-MM); omitted: `from`")]
FacilityQ = Annotated[str | None, Query(max_length=32, description="A facility's code; "
                                                                    "omitted: every facility "
                                                                    "in scope")]
NetworkQ = Annotated[Network | None, Query(description="omitted: every network in scope")]

_DOC = ("Figures by facility, network and month (reach, timeliness, sessions, wellbeing, crisis, "
        "training, safety), de-identified: codes and months only. A count of fewer people than "
        "the `min_cell` setting (11), a rate or average over fewer, and any cell that would let "
        "one be worked out, are `suppressed` (docs/reports.md). A facility or network outside "
        "the caller's scope is 404.")


@router.get("/program", response_model=svc.ProgramReport, response_model_by_alias=True,
            responses=problems(404), description=_DOC)
async def get_program_report(session: SessionDep, settings: SettingsDep, start: MonthQ,
                             end: ToQ = None, facility: FacilityQ = None,
                             network: NetworkQ = None,
                             principal: Principal = require("reports:read")) -> svc.ProgramReport:
    return await svc.program(session=session, settings=settings, principal=principal,
                             first=start, last=end, facility=facility,
                             network=network.value if network else None)


_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
              "description": "One row per figure; a text cell starting with = + - @ is "
                             "prefixed with ' (no spreadsheet runs it)"}}
_HTML: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {"schema": {"type": "string"}}},
               "description": "One self-contained page (inline CSS, SVG charts, print rules)"}}


@router.get("/program.csv", response_class=Response, responses={**_CSV, **problems(404)},
            description=_DOC)
async def get_program_report_csv(session: SessionDep, settings: SettingsDep, start: MonthQ,
                                 end: ToQ = None, facility: FacilityQ = None,
                                 network: NetworkQ = None,
                                 principal: Principal = require("reports:read")) -> Response:
    report = await svc.program(session=session, settings=settings, principal=principal,
                               first=start, last=end, facility=facility,
                               network=network.value if network else None)
    return Response(render.to_csv(report), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="program-report.csv"'})


@router.get("/program.html", response_class=HTMLResponse, responses={**_HTML, **problems(404)},
            description="The monthly program report for leadership, one facility and month, as "
                        "one printable page. " + _DOC)
async def get_program_report_html(
        session: SessionDep, settings: SettingsDep,
        facility: Annotated[str, Query(max_length=32, description="The facility's code")],
        month: Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                                    description="The month (YYYY-MM)")],
        network: NetworkQ = None,
        principal: Principal = require("reports:read")) -> HTMLResponse:
    report = await svc.program(session=session, settings=settings, principal=principal,
                               first=month, last=month, facility=facility,
                               network=network.value if network else None)
    return HTMLResponse(render.to_html(report), headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "img-src data:; frame-ancestors 'none'"})
