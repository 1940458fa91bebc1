from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.get_account_history_interval import GetAccountHistoryInterval
from ...models.history_read import HistoryRead
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    account_id: str,
    *,
    since: str,
    until: str | Unset = UNSET,
    interval: GetAccountHistoryInterval | Unset = GetAccountHistoryInterval.DAY,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(ledger_min_position, Unset):
        headers["Ledger-Min-Position"] = str(ledger_min_position)

    params: dict[str, Any] = {}

    params["since"] = since

    params["until"] = until

    json_interval: str | Unset = UNSET
    if not isinstance(interval, Unset):
        json_interval = interval.value

    params["interval"] = json_interval

    params["min_position"] = min_position

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/accounts/{account_id}/history".format(
            account_id=quote(str(account_id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> HistoryRead | Problem | None:
    if response.status_code == 200:
        response_200 = HistoryRead.from_dict(response.json())

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

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

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
) -> Response[HistoryRead | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    since: str,
    until: str | Unset = UNSET,
    interval: GetAccountHistoryInterval | Unset = GetAccountHistoryInterval.DAY,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[HistoryRead | Problem]:
    """The balance at the end of each hour, day or month

    Args:
        account_id (str):
        since (str): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        interval (GetAccountHistoryInterval | Unset):  Default: GetAccountHistoryInterval.DAY.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[HistoryRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        since=since,
        until=until,
        interval=interval,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    since: str,
    until: str | Unset = UNSET,
    interval: GetAccountHistoryInterval | Unset = GetAccountHistoryInterval.DAY,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> HistoryRead | Problem | None:
    """The balance at the end of each hour, day or month

    Args:
        account_id (str):
        since (str): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        interval (GetAccountHistoryInterval | Unset):  Default: GetAccountHistoryInterval.DAY.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        HistoryRead | Problem
    """

    return sync_detailed(
        account_id=account_id,
        client=client,
        since=since,
        until=until,
        interval=interval,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    ).parsed


async def asyncio_detailed(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    since: str,
    until: str | Unset = UNSET,
    interval: GetAccountHistoryInterval | Unset = GetAccountHistoryInterval.DAY,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[HistoryRead | Problem]:
    """The balance at the end of each hour, day or month

    Args:
        account_id (str):
        since (str): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        interval (GetAccountHistoryInterval | Unset):  Default: GetAccountHistoryInterval.DAY.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[HistoryRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        since=since,
        until=until,
        interval=interval,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    since: str,
    until: str | Unset = UNSET,
    interval: GetAccountHistoryInterval | Unset = GetAccountHistoryInterval.DAY,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> HistoryRead | Problem | None:
    """The balance at the end of each hour, day or month

    Args:
        account_id (str):
        since (str): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        interval (GetAccountHistoryInterval | Unset):  Default: GetAccountHistoryInterval.DAY.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        HistoryRead | Problem
    """

    return (
        await asyncio_detailed(
            account_id=account_id,
            client=client,
            since=since,
            until=until,
            interval=interval,
            min_position=min_position,
            ledger_min_position=ledger_min_position,
        )
    ).parsed
