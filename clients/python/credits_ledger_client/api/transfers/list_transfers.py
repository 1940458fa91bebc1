from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.list_transfers_order import ListTransfersOrder
from ...models.list_transfers_status_type_1 import ListTransfersStatusType1
from ...models.list_transfers_status_type_2_type_1 import ListTransfersStatusType2Type1
from ...models.list_transfers_status_type_3_type_1 import ListTransfersStatusType3Type1
from ...models.page_transfer_read import PageTransferRead
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    account_id: str | Unset = UNSET,
    status: ListTransfersStatusType1
    | ListTransfersStatusType2Type1
    | ListTransfersStatusType3Type1
    | None
    | Unset = UNSET,
    since: str | Unset = UNSET,
    until: str | Unset = UNSET,
    order: ListTransfersOrder | Unset = ListTransfersOrder.DESC,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(ledger_min_position, Unset):
        headers["Ledger-Min-Position"] = str(ledger_min_position)

    params: dict[str, Any] = {}

    params["account_id"] = account_id

    json_status: None | str | Unset
    if isinstance(status, Unset):
        json_status = UNSET
    elif (
        isinstance(status, ListTransfersStatusType1)
        or isinstance(status, ListTransfersStatusType2Type1)
        or isinstance(status, ListTransfersStatusType3Type1)
    ):
        json_status = status.value
    else:
        json_status = status
    params["status"] = json_status

    params["since"] = since

    params["until"] = until

    json_order: str | Unset = UNSET
    if not isinstance(order, Unset):
        json_order = order.value

    params["order"] = json_order

    params["cursor"] = cursor

    params["limit"] = limit

    params["min_position"] = min_position

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/transfers",
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> PageTransferRead | Problem | None:
    if response.status_code == 200:
        response_200 = PageTransferRead.from_dict(response.json())

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
) -> Response[PageTransferRead | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    account_id: str | Unset = UNSET,
    status: ListTransfersStatusType1
    | ListTransfersStatusType2Type1
    | ListTransfersStatusType3Type1
    | None
    | Unset = UNSET,
    since: str | Unset = UNSET,
    until: str | Unset = UNSET,
    order: ListTransfersOrder | Unset = ListTransfersOrder.DESC,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[PageTransferRead | Problem]:
    """Transfers in log order (newest first by default), filtered

    Args:
        account_id (str | Unset):
        status (ListTransfersStatusType1 | ListTransfersStatusType2Type1 |
            ListTransfersStatusType3Type1 | None | Unset):
        since (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        order (ListTransfersOrder | Unset):  Default: ListTransfersOrder.DESC.
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PageTransferRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        status=status,
        since=since,
        until=until,
        order=order,
        cursor=cursor,
        limit=limit,
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
    account_id: str | Unset = UNSET,
    status: ListTransfersStatusType1
    | ListTransfersStatusType2Type1
    | ListTransfersStatusType3Type1
    | None
    | Unset = UNSET,
    since: str | Unset = UNSET,
    until: str | Unset = UNSET,
    order: ListTransfersOrder | Unset = ListTransfersOrder.DESC,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> PageTransferRead | Problem | None:
    """Transfers in log order (newest first by default), filtered

    Args:
        account_id (str | Unset):
        status (ListTransfersStatusType1 | ListTransfersStatusType2Type1 |
            ListTransfersStatusType3Type1 | None | Unset):
        since (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        order (ListTransfersOrder | Unset):  Default: ListTransfersOrder.DESC.
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PageTransferRead | Problem
    """

    return sync_detailed(
        client=client,
        account_id=account_id,
        status=status,
        since=since,
        until=until,
        order=order,
        cursor=cursor,
        limit=limit,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    account_id: str | Unset = UNSET,
    status: ListTransfersStatusType1
    | ListTransfersStatusType2Type1
    | ListTransfersStatusType3Type1
    | None
    | Unset = UNSET,
    since: str | Unset = UNSET,
    until: str | Unset = UNSET,
    order: ListTransfersOrder | Unset = ListTransfersOrder.DESC,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[PageTransferRead | Problem]:
    """Transfers in log order (newest first by default), filtered

    Args:
        account_id (str | Unset):
        status (ListTransfersStatusType1 | ListTransfersStatusType2Type1 |
            ListTransfersStatusType3Type1 | None | Unset):
        since (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        order (ListTransfersOrder | Unset):  Default: ListTransfersOrder.DESC.
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PageTransferRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        status=status,
        since=since,
        until=until,
        order=order,
        cursor=cursor,
        limit=limit,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    account_id: str | Unset = UNSET,
    status: ListTransfersStatusType1
    | ListTransfersStatusType2Type1
    | ListTransfersStatusType3Type1
    | None
    | Unset = UNSET,
    since: str | Unset = UNSET,
    until: str | Unset = UNSET,
    order: ListTransfersOrder | Unset = ListTransfersOrder.DESC,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> PageTransferRead | Problem | None:
    """Transfers in log order (newest first by default), filtered

    Args:
        account_id (str | Unset):
        status (ListTransfersStatusType1 | ListTransfersStatusType2Type1 |
            ListTransfersStatusType3Type1 | None | Unset):
        since (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        until (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        order (ListTransfersOrder | Unset):  Default: ListTransfersOrder.DESC.
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PageTransferRead | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            account_id=account_id,
            status=status,
            since=since,
            until=until,
            order=order,
            cursor=cursor,
            limit=limit,
            min_position=min_position,
            ledger_min_position=ledger_min_position,
        )
    ).parsed
