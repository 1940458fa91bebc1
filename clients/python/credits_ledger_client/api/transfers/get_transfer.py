from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transfer_read import TransferRead
from ...types import UNSET, Response, Unset


def _get_kwargs(
    transfer_id: str,
    *,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(ledger_min_position, Unset):
        headers["Ledger-Min-Position"] = str(ledger_min_position)

    params: dict[str, Any] = {}

    params["min_position"] = min_position

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/transfers/{transfer_id}".format(
            transfer_id=quote(str(transfer_id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | TransferRead | None:
    if response.status_code == 200:
        response_200 = TransferRead.from_dict(response.json())

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
) -> Response[Problem | TransferRead]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    transfer_id: str,
    *,
    client: AuthenticatedClient | Client,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[Problem | TransferRead]:
    """One transfer, with its status

    Args:
        transfer_id (str):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferRead]
    """

    kwargs = _get_kwargs(
        transfer_id=transfer_id,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    transfer_id: str,
    *,
    client: AuthenticatedClient | Client,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Problem | TransferRead | None:
    """One transfer, with its status

    Args:
        transfer_id (str):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferRead
    """

    return sync_detailed(
        transfer_id=transfer_id,
        client=client,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    ).parsed


async def asyncio_detailed(
    transfer_id: str,
    *,
    client: AuthenticatedClient | Client,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Response[Problem | TransferRead]:
    """One transfer, with its status

    Args:
        transfer_id (str):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferRead]
    """

    kwargs = _get_kwargs(
        transfer_id=transfer_id,
        min_position=min_position,
        ledger_min_position=ledger_min_position,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    transfer_id: str,
    *,
    client: AuthenticatedClient | Client,
    min_position: int | Unset = UNSET,
    ledger_min_position: int | Unset = UNSET,
) -> Problem | TransferRead | None:
    """One transfer, with its status

    Args:
        transfer_id (str):
        min_position (int | Unset):
        ledger_min_position (int | Unset): Like min_position: wait until the views reach this log
            position

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferRead
    """

    return (
        await asyncio_detailed(
            transfer_id=transfer_id,
            client=client,
            min_position=min_position,
            ledger_min_position=ledger_min_position,
        )
    ).parsed
