from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.event_page import EventPage
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    after: str | Unset = UNSET,
    types: str | Unset = UNSET,
    account_id: str | Unset = UNSET,
    limit: int | Unset = 100,
    wait_seconds: float | Unset = 0.0,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["after"] = after

    params["types"] = types

    params["account_id"] = account_id

    params["limit"] = limit

    params["wait_seconds"] = wait_seconds

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/events",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> EventPage | Problem | None:
    if response.status_code == 200:
        response_200 = EventPage.from_dict(response.json())

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

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[EventPage | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    after: str | Unset = UNSET,
    types: str | Unset = UNSET,
    account_id: str | Unset = UNSET,
    limit: int | Unset = 100,
    wait_seconds: float | Unset = 0.0,
) -> Response[EventPage | Problem]:
    """The event feed, in position order, with cursor pagination and long-poll

    Args:
        after (str | Unset): Cursor: `next_cursor` of the previous page, or an SSE event's id
            (omit to start at the beginning)
        types (str | Unset): Comma-separated event types (default: all)
        account_id (str | Unset):
        limit (int | Unset):  Default: 100.
        wait_seconds (float | Unset): When nothing is new, wait up to this long for an event
            Default: 0.0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EventPage | Problem]
    """

    kwargs = _get_kwargs(
        after=after,
        types=types,
        account_id=account_id,
        limit=limit,
        wait_seconds=wait_seconds,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    after: str | Unset = UNSET,
    types: str | Unset = UNSET,
    account_id: str | Unset = UNSET,
    limit: int | Unset = 100,
    wait_seconds: float | Unset = 0.0,
) -> EventPage | Problem | None:
    """The event feed, in position order, with cursor pagination and long-poll

    Args:
        after (str | Unset): Cursor: `next_cursor` of the previous page, or an SSE event's id
            (omit to start at the beginning)
        types (str | Unset): Comma-separated event types (default: all)
        account_id (str | Unset):
        limit (int | Unset):  Default: 100.
        wait_seconds (float | Unset): When nothing is new, wait up to this long for an event
            Default: 0.0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EventPage | Problem
    """

    return sync_detailed(
        client=client,
        after=after,
        types=types,
        account_id=account_id,
        limit=limit,
        wait_seconds=wait_seconds,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    after: str | Unset = UNSET,
    types: str | Unset = UNSET,
    account_id: str | Unset = UNSET,
    limit: int | Unset = 100,
    wait_seconds: float | Unset = 0.0,
) -> Response[EventPage | Problem]:
    """The event feed, in position order, with cursor pagination and long-poll

    Args:
        after (str | Unset): Cursor: `next_cursor` of the previous page, or an SSE event's id
            (omit to start at the beginning)
        types (str | Unset): Comma-separated event types (default: all)
        account_id (str | Unset):
        limit (int | Unset):  Default: 100.
        wait_seconds (float | Unset): When nothing is new, wait up to this long for an event
            Default: 0.0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[EventPage | Problem]
    """

    kwargs = _get_kwargs(
        after=after,
        types=types,
        account_id=account_id,
        limit=limit,
        wait_seconds=wait_seconds,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    after: str | Unset = UNSET,
    types: str | Unset = UNSET,
    account_id: str | Unset = UNSET,
    limit: int | Unset = 100,
    wait_seconds: float | Unset = 0.0,
) -> EventPage | Problem | None:
    """The event feed, in position order, with cursor pagination and long-poll

    Args:
        after (str | Unset): Cursor: `next_cursor` of the previous page, or an SSE event's id
            (omit to start at the beginning)
        types (str | Unset): Comma-separated event types (default: all)
        account_id (str | Unset):
        limit (int | Unset):  Default: 100.
        wait_seconds (float | Unset): When nothing is new, wait up to this long for an event
            Default: 0.0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        EventPage | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            after=after,
            types=types,
            account_id=account_id,
            limit=limit,
            wait_seconds=wait_seconds,
        )
    ).parsed
