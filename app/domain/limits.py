"""Every limit of the domain, named once (TigerBeetle style: a limit on everything)."""

import re
from typing import Final

AMOUNT_MIN: Final = 1
AMOUNT_MAX: Final = 2**63 - 1
# Each of the four balance counters must stay representable as a signed 64-bit integer,
# so that every backend and every client can hold it exactly.
BALANCE_COUNTER_MAX: Final = 2**63 - 1
OVERDRAFT_LIMIT_MAX: Final = 2**63 - 1

ID_LENGTH_MAX: Final = 128
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNIT_PATTERN: Final = re.compile(r"[A-Z0-9_]{1,16}")

METADATA_ENTRIES_MAX: Final = 32
METADATA_KEY_LENGTH_MAX: Final = 64
METADATA_VALUE_LENGTH_MAX: Final = 1024

# A hold may last at most a year; a longer reservation is a modelling mistake.
TIMEOUT_SECONDS_MIN: Final = 1
TIMEOUT_SECONDS_MAX: Final = 366 * 24 * 3600

BATCH_SIZE_MAX: Final = 1000
