from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.list_account_grants_status import ListAccountGrantsStatus
from ...models.lot_page_read import LotPageRead
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    account_id: str,
    *,
    status: ListAccountGrantsStatus | Unset = ListAccountGrantsStatus.LIVE,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_status: str | Unset = UNSET
    if not isinstance(status, Unset):
        json_status = status.value

    params["status"] = json_status

    params["as_of"] = as_of

    params["at_position"] = at_position

    params["min_position"] = min_position

    params["cursor"] = cursor

    params["limit"] = limit

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/accounts/{account_id}/grants".format(
            account_id=quote(str(account_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> LotPageRead | Problem | None:
    if response.status_code == 200:
        response_200 = LotPageRead.from_dict(response.json())

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
) -> Response[LotPageRead | Problem]:
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
    status: ListAccountGrantsStatus | Unset = ListAccountGrantsStatus.LIVE,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
) -> Response[LotPageRead | Problem]:
    """Credit lots: original amount, remaining, reserved, expiry, status

    Args:
        account_id (str):
        status (ListAccountGrantsStatus | Unset):  Default: ListAccountGrantsStatus.LIVE.
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[LotPageRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        status=status,
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        cursor=cursor,
        limit=limit,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    status: ListAccountGrantsStatus | Unset = ListAccountGrantsStatus.LIVE,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
) -> LotPageRead | Problem | None:
    """Credit lots: original amount, remaining, reserved, expiry, status

    Args:
        account_id (str):
        status (ListAccountGrantsStatus | Unset):  Default: ListAccountGrantsStatus.LIVE.
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        LotPageRead | Problem
    """

    return sync_detailed(
        account_id=account_id,
        client=client,
        status=status,
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        cursor=cursor,
        limit=limit,
    ).parsed


async def asyncio_detailed(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    status: ListAccountGrantsStatus | Unset = ListAccountGrantsStatus.LIVE,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
) -> Response[LotPageRead | Problem]:
    """Credit lots: original amount, remaining, reserved, expiry, status

    Args:
        account_id (str):
        status (ListAccountGrantsStatus | Unset):  Default: ListAccountGrantsStatus.LIVE.
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[LotPageRead | Problem]
    """

    kwargs = _get_kwargs(
        account_id=account_id,
        status=status,
        as_of=as_of,
        at_position=at_position,
        min_position=min_position,
        cursor=cursor,
        limit=limit,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    account_id: str,
    *,
    client: AuthenticatedClient | Client,
    status: ListAccountGrantsStatus | Unset = ListAccountGrantsStatus.LIVE,
    as_of: str | Unset = UNSET,
    at_position: int | Unset = UNSET,
    min_position: int | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
) -> LotPageRead | Problem | None:
    """Credit lots: original amount, remaining, reserved, expiry, status

    Args:
        account_id (str):
        status (ListAccountGrantsStatus | Unset):  Default: ListAccountGrantsStatus.LIVE.
        as_of (str | Unset): An instant: RFC 3339 with an offset (2026-03-01T12:00:00Z,
            2026-03-01T13:00:00+01:00) or a date (2026-03-01, meaning midnight UTC)
        at_position (int | Unset):
        min_position (int | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        LotPageRead | Problem
    """

    return (
        await asyncio_detailed(
            account_id=account_id,
            client=client,
            status=status,
            as_of=as_of,
            at_position=at_position,
            min_position=min_position,
            cursor=cursor,
            limit=limit,
        )
    ).parsed
