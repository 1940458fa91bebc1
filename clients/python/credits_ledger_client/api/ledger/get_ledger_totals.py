from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.totals_read import TotalsRead
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(ledger_min_position, Unset):
        headers["Ledger-Min-Position"] = str(ledger_min_position)

    params: dict[str, Any] = {}

    params["as_of"] = as_of

    params["at_position"] = at_position

    params["min_position"] = min_position

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/ledger/totals",
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | TotalsRead | None:
    if response.status_code == 200:
        response_200 = TotalsRead.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

    if response.status_code == 409:
        response_409 = Problem.from_dict(response.json())

        return response_409

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Problem | TotalsRead]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[Problem | TotalsRead]:
    """Per unit: debits, credits, balance sum (always 0), account count

    Args:
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TotalsRead]
    """

    kwargs = _get_kwargs(
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Problem | TotalsRead | None:
    """Per unit: debits, credits, balance sum (always 0), account count

    Args:
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TotalsRead
    """

    return sync_detailed(
        client=client,
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[Problem | TotalsRead]:
    """Per unit: debits, credits, balance sum (always 0), account count

    Args:
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TotalsRead]
    """

    kwargs = _get_kwargs(
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Problem | TotalsRead | None:
    """Per unit: debits, credits, balance sum (always 0), account count

    Args:
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TotalsRead
    """

    return (
        await asyncio_detailed(
            client=client,
            as_of=as_of,
            at_position=at_position,
            min_position=min_position,
            ledger_min_position=ledger_min_position,
        )
    ).parsed
