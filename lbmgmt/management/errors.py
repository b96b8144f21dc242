"""Management errors and their JSON-RPC codes (docs/management.md lists them).

Codes are stable: scripts switch on them. Messages are for people; ``data``
carries the details a client needs (which MBean, which attribute).
"""

from __future__ import annotations

from typing import Any

UNKNOWN_MBEAN = -32001
UNKNOWN_ATTRIBUTE = -32002
UNKNOWN_OPERATION = -32003
NOT_WRITABLE = -32004
BAD_PARAMETER = -32005
FORBIDDEN = -32006
OPERATION_FAILED = -32007
RESPONSE_TOO_LARGE = -32008
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL = -32603


class ManagementError(Exception):
    code = INTERNAL
    title = "Internal error"

    def __init__(self, detail: str | None = None, **data: Any) -> None:
        self.detail = detail
        self.data = data
        super().__init__(detail or self.title)

    @property
    def message(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title


class UnknownMBean(ManagementError):
    code, title = UNKNOWN_MBEAN, "Unknown MBean"


class UnknownAttribute(ManagementError):
    code, title = UNKNOWN_ATTRIBUTE, "Unknown attribute"


class UnknownOperation(ManagementError):
    code, title = UNKNOWN_OPERATION, "Unknown operation"


class NotWritable(ManagementError):
    code, title = NOT_WRITABLE, "Attribute not writable"


class BadParameter(ManagementError):
    code, title = BAD_PARAMETER, "Bad parameter"


class Forbidden(ManagementError):
    code, title = FORBIDDEN, "Forbidden"


class OperationFailed(ManagementError):
    code, title = OPERATION_FAILED, "Operation failed"


class InvalidParams(ManagementError):
    code, title = INVALID_PARAMS, "Invalid params"


ERROR_TABLE: list[tuple[int, str, str]] = [
    (UNKNOWN_MBEAN, UnknownMBean.title, "no registered MBean has that name"),
    (UNKNOWN_ATTRIBUTE, UnknownAttribute.title, "the MBean has no such attribute"),
    (UNKNOWN_OPERATION, UnknownOperation.title, "the MBean has no such operation"),
    (NOT_WRITABLE, NotWritable.title, "the attribute is read-only"),
    (BAD_PARAMETER, BadParameter.title,
     "a value has the wrong type or is out of range for the attribute or parameter"),
    (FORBIDDEN, Forbidden.title, "the caller's role may not do this (readonly: no set, "
                                 "no ACTION operations)"),
    (OPERATION_FAILED, OperationFailed.title, "the operation ran and refused (e.g. unknown "
                                              "server GUID)"),
    (RESPONSE_TOO_LARGE, "Response too large", "the answer would pass [management] "
                                                "max_response_bytes: ask for less at a time"),
    (PARSE_ERROR, "Parse error", "the body is not JSON as RFC 8259 has it (NaN, Infinity, "
                                 "numbers out of range, nesting deeper than 32, bad UTF-8)"),
    (INVALID_REQUEST, "Invalid Request", "not a JSON-RPC 2.0 request, or a batch longer than "
                                         "[management] max_batch"),
    (INVALID_PARAMS, InvalidParams.title, "the method's own arguments are missing or of the "
                                          "wrong type"),
    (INTERNAL, "Internal error", "a bug: logged on the daemon, no details sent"),
]
