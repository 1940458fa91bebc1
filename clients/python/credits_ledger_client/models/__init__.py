"""Contains all the data models used in inputs/outputs"""

from .account_create import AccountCreate
from .account_create_metadata import AccountCreateMetadata
from .account_read import AccountRead
from .account_read_metadata import AccountReadMetadata
from .account_read_status import AccountReadStatus
from .account_type import AccountType
from .account_update import AccountUpdate
from .account_update_metadata import AccountUpdateMetadata
from .allocation_read import AllocationRead
from .batch_create import BatchCreate
from .batch_item_result import BatchItemResult
from .batch_read import BatchRead
from .delivery_read import DeliveryRead
from .delivery_read_status import DeliveryReadStatus
from .entry_read import EntryRead
from .entry_read_action import EntryReadAction
from .entry_read_kind import EntryReadKind
from .entry_read_metadata import EntryReadMetadata
from .event_page import EventPage
from .event_type import EventType
from .events_readiness import EventsReadiness
from .get_account_history_interval import GetAccountHistoryInterval
from .grant_create import GrantCreate
from .grant_create_category import GrantCreateCategory
from .grant_read import GrantRead
from .grant_read_category import GrantReadCategory
from .health import Health
from .history_point_read import HistoryPointRead
from .history_read import HistoryRead
from .history_read_interval import HistoryReadInterval
from .list_account_grants_status import ListAccountGrantsStatus
from .list_accounts_status_type_1 import ListAccountsStatusType1
from .list_accounts_status_type_2_type_1 import ListAccountsStatusType2Type1
from .list_accounts_status_type_3_type_1 import ListAccountsStatusType3Type1
from .list_transfers_order import ListTransfersOrder
from .list_transfers_status_type_1 import ListTransfersStatusType1
from .list_transfers_status_type_2_type_1 import ListTransfersStatusType2Type1
from .list_transfers_status_type_3_type_1 import ListTransfersStatusType3Type1
from .lot_page_read import LotPageRead
from .lot_read import LotRead
from .lot_read_status import LotReadStatus
from .monitor_create import MonitorCreate
from .monitor_create_field import MonitorCreateField
from .monitor_read import MonitorRead
from .monitor_read_field import MonitorReadField
from .page_account_read import PageAccountRead
from .page_delivery_read import PageDeliveryRead
from .page_entry_read import PageEntryRead
from .page_monitor_read import PageMonitorRead
from .page_transfer_read import PageTransferRead
from .page_webhook_read import PageWebhookRead
from .post_pending import PostPending
from .problem import Problem
from .problem_code import ProblemCode
from .public_event import PublicEvent
from .public_event_data import PublicEventData
from .readiness import Readiness
from .readiness_status import ReadinessStatus
from .reverse_transfer import ReverseTransfer
from .reverse_transfer_metadata import ReverseTransferMetadata
from .totals_read import TotalsRead
from .transfer_create import TransferCreate
from .transfer_create_metadata import TransferCreateMetadata
from .transfer_read import TransferRead
from .transfer_read_metadata import TransferReadMetadata
from .transfer_read_status import TransferReadStatus
from .unit_totals_read import UnitTotalsRead
from .void_pending import VoidPending
from .webhook_create import WebhookCreate
from .webhook_created import WebhookCreated
from .webhook_created_status import WebhookCreatedStatus
from .webhook_read import WebhookRead
from .webhook_read_status import WebhookReadStatus
from .webhook_replay import WebhookReplay
from .webhook_update import WebhookUpdate
from .worker_status import WorkerStatus

__all__ = (
    "AccountCreate",
    "AccountCreateMetadata",
    "AccountRead",
    "AccountReadMetadata",
    "AccountReadStatus",
    "AccountType",
    "AccountUpdate",
    "AccountUpdateMetadata",
    "AllocationRead",
    "BatchCreate",
    "BatchItemResult",
    "BatchRead",
    "DeliveryRead",
    "DeliveryReadStatus",
    "EntryRead",
    "EntryReadAction",
    "EntryReadKind",
    "EntryReadMetadata",
    "EventPage",
    "EventType",
    "EventsReadiness",
    "GetAccountHistoryInterval",
    "GrantCreate",
    "GrantCreateCategory",
    "GrantRead",
    "GrantReadCategory",
    "Health",
    "HistoryPointRead",
    "HistoryRead",
    "HistoryReadInterval",
    "ListAccountGrantsStatus",
    "ListAccountsStatusType1",
    "ListAccountsStatusType2Type1",
    "ListAccountsStatusType3Type1",
    "ListTransfersOrder",
    "ListTransfersStatusType1",
    "ListTransfersStatusType2Type1",
    "ListTransfersStatusType3Type1",
    "LotPageRead",
    "LotRead",
    "LotReadStatus",
    "MonitorCreate",
    "MonitorCreateField",
    "MonitorRead",
    "MonitorReadField",
    "PageAccountRead",
    "PageDeliveryRead",
    "PageEntryRead",
    "PageMonitorRead",
    "PageTransferRead",
    "PageWebhookRead",
    "PostPending",
    "Problem",
    "ProblemCode",
    "PublicEvent",
    "PublicEventData",
    "Readiness",
    "ReadinessStatus",
    "ReverseTransfer",
    "ReverseTransferMetadata",
    "TotalsRead",
    "TransferCreate",
    "TransferCreateMetadata",
    "TransferRead",
    "TransferReadMetadata",
    "TransferReadStatus",
    "UnitTotalsRead",
    "VoidPending",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookCreatedStatus",
    "WebhookRead",
    "WebhookReadStatus",
    "WebhookReplay",
    "WebhookUpdate",
    "WorkerStatus",
)
