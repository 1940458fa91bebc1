from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.list_accounts_status_type_1 import ListAccountsStatusType1
from ...models.list_accounts_status_type_2_type_1 import ListAccountsStatusType2Type1
from ...models.list_accounts_status_type_3_type_1 import ListAccountsStatusType3Type1
from ...models.page_account_read import PageAccountRead
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    prefix: str | Unset = UNSET,
    unit: str | Unset = UNSET,
    status: ListAccountsStatusType1
    | ListAccountsStatusType2Type1
    | ListAccountsStatusType3Type1
    | None
    | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(ledger_min_position, Unset):
        headers["Ledger-Min-Position"] = str(ledger_min_position)

    params: dict[str, Any] = {}

    params["prefix"] = prefix

    params["unit"] = unit

    json_status: None | str | Unset
    if isinstance(status, Unset):
        json_status = UNSET
    elif (
        isinstance(status, ListAccountsStatusType1)
        or isinstance(status, ListAccountsStatusType2Type1)
        or isinstance(status, ListAccountsStatusType3Type1)
    ):
        json_status = status.value
    else:
        json_status = status
    params["status"] = json_status

    params["cursor"] = cursor

    params["limit"] = limit

    params["min_position"] = min_position

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/accounts",
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> PageAccountRead | Problem | None:
    if response.status_code == 200:
        response_200 = PageAccountRead.from_dict(response.json())

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
) -> Response[PageAccountRead | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    prefix: str | Unset = UNSET,
    unit: str | Unset = UNSET,
    status: ListAccountsStatusType1
    | ListAccountsStatusType2Type1
    | ListAccountsStatusType3Type1
    | None
    | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[PageAccountRead | Problem]:
    """List and search accounts, ordered by id

    Args:
        prefix (str | Unset):
        unit (str | Unset):
        status (ListAccountsStatusType1 | ListAccountsStatusType2Type1 |
            ListAccountsStatusType3Type1 | None | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PageAccountRead | Problem]
    """

    kwargs = _get_kwargs(
        prefix=prefix,
        unit=unit,
        status=status,
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
    prefix: str | Unset = UNSET,
    unit: str | Unset = UNSET,
    status: ListAccountsStatusType1
    | ListAccountsStatusType2Type1
    | ListAccountsStatusType3Type1
    | None
    | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> PageAccountRead | Problem | None:
    """List and search accounts, ordered by id

    Args:
        prefix (str | Unset):
        unit (str | Unset):
        status (ListAccountsStatusType1 | ListAccountsStatusType2Type1 |
            ListAccountsStatusType3Type1 | None | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PageAccountRead | Problem
    """

    return sync_detailed(
        client=client,
        prefix=prefix,
        unit=unit,
        status=status,
        cursor=cursor,
        limit=limit,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    prefix: str | Unset = UNSET,
    unit: str | Unset = UNSET,
    status: ListAccountsStatusType1
    | ListAccountsStatusType2Type1
    | ListAccountsStatusType3Type1
    | None
    | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[PageAccountRead | Problem]:
    """List and search accounts, ordered by id

    Args:
        prefix (str | Unset):
        unit (str | Unset):
        status (ListAccountsStatusType1 | ListAccountsStatusType2Type1 |
            ListAccountsStatusType3Type1 | None | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PageAccountRead | Problem]
    """

    kwargs = _get_kwargs(
        prefix=prefix,
        unit=unit,
        status=status,
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
    prefix: str | Unset = UNSET,
    unit: str | Unset = UNSET,
    status: ListAccountsStatusType1
    | ListAccountsStatusType2Type1
    | ListAccountsStatusType3Type1
    | None
    | Unset = UNSET,
    cursor: str | Unset = UNSET,
    limit: int | Unset = 100,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> PageAccountRead | Problem | None:
    """List and search accounts, ordered by id

    Args:
        prefix (str | Unset):
        unit (str | Unset):
        status (ListAccountsStatusType1 | ListAccountsStatusType2Type1 |
            ListAccountsStatusType3Type1 | None | Unset):
        cursor (str | Unset):
        limit (int | Unset):  Default: 100.
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PageAccountRead | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            prefix=prefix,
            unit=unit,
            status=status,
            cursor=cursor,
            limit=limit,
            min_position=min_position,
            ledger_min_position=ledger_min_position,
        )
    ).parsed
