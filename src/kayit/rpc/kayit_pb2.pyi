from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Version(_message.Message):
    __slots__ = ("term", "seq")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    term: int
    seq: int
    def __init__(self, term: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class StoredMessage(_message.Message):
    __slots__ = ("id", "payload", "version", "committed")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    id: str
    payload: bytes
    version: Version
    committed: bool
    def __init__(self, id: _Optional[str] = ..., payload: _Optional[bytes] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., committed: _Optional[bool] = ...) -> None: ...

class StoreResult(_message.Message):
    __slots__ = ("stored", "current")
    STORED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    current: Version
    def __init__(self, stored: _Optional[bool] = ..., current: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class StoreBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[StoredMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[StoredMessage, _Mapping]]] = ...) -> None: ...

class StoreBatchResult(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StoreResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StoreResult, _Mapping]]] = ...) -> None: ...

class MessageId(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class RetrieveResult(_message.Message):
    __slots__ = ("found", "message")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    message: StoredMessage
    def __init__(self, found: _Optional[bool] = ..., message: _Optional[_Union[StoredMessage, _Mapping]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("address", "node_id")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("accepted", "reason", "leader_address", "refused", "cluster_id", "tolerance", "nodes")
    class NodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    leader_address: str
    refused: bool
    cluster_id: str
    tolerance: int
    nodes: _containers.ScalarMap[str, str]
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., leader_address: _Optional[str] = ..., refused: _Optional[bool] = ..., cluster_id: _Optional[str] = ..., tolerance: _Optional[int] = ..., nodes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: str
    def __init__(self, member: _Optional[str] = ...) -> None: ...

class RemoveMemberReply(_message.Message):
    __slots__ = ("removed", "node_id", "address", "error", "leader_address", "refused")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    node_id: str
    address: str
    error: str
    leader_address: str
    refused: bool
    def __init__(self, removed: _Optional[bool] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ..., error: _Optional[str] = ..., leader_address: _Optional[str] = ..., refused: _Optional[bool] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CountReply(_message.Message):
    __slots__ = ("message_count",)
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    message_count: int
    def __init__(self, message_count: _Optional[int] = ...) -> None: ...

class InventoryRequest(_message.Message):
    __slots__ = ("verify",)
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    verify: bool
    def __init__(self, verify: _Optional[bool] = ...) -> None: ...

class InventoryEntry(_message.Message):
    __slots__ = ("id", "version", "pending")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    pending: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., pending: _Optional[bool] = ...) -> None: ...

class InventoryChunk(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[InventoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[InventoryEntry, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[InventoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[InventoryEntry, _Mapping]]] = ...) -> None: ...

class DeleteResult(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("address", "alive", "assigned", "node_id", "voter")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    address: str
    alive: bool
    assigned: int
    node_id: str
    voter: bool
    def __init__(self, address: _Optional[str] = ..., alive: _Optional[bool] = ..., assigned: _Optional[int] = ..., node_id: _Optional[str] = ..., voter: _Optional[bool] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("role", "address", "message_count", "tolerance", "members", "term", "leader_address", "node_id", "removed", "last_log_index", "last_log_term", "disk_sync_failures", "disk_sync_error", "under_replicated", "backlog", "backlog_bound")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    DISK_SYNC_FAILURES_FIELD_NUMBER: _ClassVar[int]
    DISK_SYNC_ERROR_FIELD_NUMBER: _ClassVar[int]
    UNDER_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BOUND_FIELD_NUMBER: _ClassVar[int]
    role: str
    address: str
    message_count: int
    tolerance: int
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    term: int
    leader_address: str
    node_id: str
    removed: _containers.RepeatedScalarFieldContainer[str]
    last_log_index: int
    last_log_term: int
    disk_sync_failures: int
    disk_sync_error: str
    under_replicated: int
    backlog: int
    backlog_bound: int
    def __init__(self, role: _Optional[str] = ..., address: _Optional[str] = ..., message_count: _Optional[int] = ..., tolerance: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., term: _Optional[int] = ..., leader_address: _Optional[str] = ..., node_id: _Optional[str] = ..., removed: _Optional[_Iterable[str]] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ..., disk_sync_failures: _Optional[int] = ..., disk_sync_error: _Optional[str] = ..., under_replicated: _Optional[int] = ..., backlog: _Optional[int] = ..., backlog_bound: _Optional[int] = ...) -> None: ...

class RecoveryStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingCopy(_message.Message):
    __slots__ = ("id", "version", "checksum")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: Version
    checksum: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., checksum: _Optional[int] = ...) -> None: ...

class RecoveryStateReply(_message.Message):
    __slots__ = ("node_id", "term", "leader_id", "commit_index", "commit_term", "pending")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TERM_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    term: int
    leader_id: str
    commit_index: int
    commit_term: int
    pending: _containers.RepeatedCompositeFieldContainer[PendingCopy]
    def __init__(self, node_id: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[str] = ..., commit_index: _Optional[int] = ..., commit_term: _Optional[int] = ..., pending: _Optional[_Iterable[_Union[PendingCopy, _Mapping]]] = ...) -> None: ...

class RecoverRequest(_message.Message):
    __slots__ = ("survivors",)
    class SurvivorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.ScalarMap[str, str]
    def __init__(self, survivors: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecoverReply(_message.Message):
    __slots__ = ("recovered", "error", "log_incomplete", "leader_id", "leader_address", "term", "adopted", "removed", "message_count")
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    recovered: bool
    error: str
    log_incomplete: bool
    leader_id: str
    leader_address: str
    term: int
    adopted: int
    removed: _containers.RepeatedScalarFieldContainer[str]
    message_count: int
    def __init__(self, recovered: _Optional[bool] = ..., error: _Optional[str] = ..., log_incomplete: _Optional[bool] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., term: _Optional[int] = ..., adopted: _Optional[int] = ..., removed: _Optional[_Iterable[str]] = ..., message_count: _Optional[int] = ...) -> None: ...

class ClientCommand(_message.Message):
    __slots__ = ("kind", "id", "message")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ClientCommand.Kind]
        SET: _ClassVar[ClientCommand.Kind]
        GET: _ClassVar[ClientCommand.Kind]
        EXISTS: _ClassVar[ClientCommand.Kind]
        DEL: _ClassVar[ClientCommand.Kind]
    KIND_UNSPECIFIED: ClientCommand.Kind
    SET: ClientCommand.Kind
    GET: ClientCommand.Kind
    EXISTS: ClientCommand.Kind
    DEL: ClientCommand.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: ClientCommand.Kind
    id: str
    message: bytes
    def __init__(self, kind: _Optional[_Union[ClientCommand.Kind, str]] = ..., id: _Optional[str] = ..., message: _Optional[bytes] = ...) -> None: ...

class ClientBatch(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[ClientCommand]
    def __init__(self, commands: _Optional[_Iterable[_Union[ClientCommand, _Mapping]]] = ...) -> None: ...

class ClientResult(_message.Message):
    __slots__ = ("outcome", "value", "error_code", "reason")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[ClientResult.Outcome]
        STORED: _ClassVar[ClientResult.Outcome]
        FOUND: _ClassVar[ClientResult.Outcome]
        NOT_FOUND: _ClassVar[ClientResult.Outcome]
        ERROR: _ClassVar[ClientResult.Outcome]
        PRESENT: _ClassVar[ClientResult.Outcome]
    OUTCOME_UNSPECIFIED: ClientResult.Outcome
    STORED: ClientResult.Outcome
    FOUND: ClientResult.Outcome
    NOT_FOUND: ClientResult.Outcome
    ERROR: ClientResult.Outcome
    PRESENT: ClientResult.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    outcome: ClientResult.Outcome
    value: bytes
    error_code: str
    reason: str
    def __init__(self, outcome: _Optional[_Union[ClientResult.Outcome, str]] = ..., value: _Optional[bytes] = ..., error_code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ClientResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClientResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ClientResult, _Mapping]]] = ...) -> None: ...

class KeysRequest(_message.Message):
    __slots__ = ("cursor", "count", "pattern")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    count: int
    pattern: bytes
    def __init__(self, cursor: _Optional[int] = ..., count: _Optional[int] = ..., pattern: _Optional[bytes] = ...) -> None: ...

class KeysReply(_message.Message):
    __slots__ = ("ids", "cursor", "error_code", "reason")
    IDS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    cursor: int
    error_code: str
    reason: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., cursor: _Optional[int] = ..., error_code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RaftEntry(_message.Message):
    __slots__ = ("index", "term", "kind", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    kind: str
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftVoteRequest(_message.Message):
    __slots__ = ("last_log_index", "last_log_term", "pre_vote", "transfer")
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    last_log_index: int
    last_log_term: int
    pre_vote: bool
    transfer: bool
    def __init__(self, last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., transfer: _Optional[bool] = ...) -> None: ...

class RaftVoteResponse(_message.Message):
    __slots__ = ("granted", "pre_vote")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    pre_vote: bool
    def __init__(self, granted: _Optional[bool] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class RaftAppendRequest(_message.Message):
    __slots__ = ("prev_log_index", "prev_log_term", "entries", "leader_commit", "read_round")
    PREV_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    READ_ROUND_FIELD_NUMBER: _ClassVar[int]
    prev_log_index: int
    prev_log_term: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    leader_commit: int
    read_round: int
    def __init__(self, prev_log_index: _Optional[int] = ..., prev_log_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., leader_commit: _Optional[int] = ..., read_round: _Optional[int] = ...) -> None: ...

class RaftAppendResponse(_message.Message):
    __slots__ = ("success", "match_index", "rejected_index", "last_index", "read_round")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECTED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    READ_ROUND_FIELD_NUMBER: _ClassVar[int]
    success: bool
    match_index: int
    rejected_index: int
    last_index: int
    read_round: int
    def __init__(self, success: _Optional[bool] = ..., match_index: _Optional[int] = ..., rejected_index: _Optional[int] = ..., last_index: _Optional[int] = ..., read_round: _Optional[int] = ...) -> None: ...

class RaftSnapshotChunk(_message.Message):
    __slots__ = ("index", "term", "offset", "data", "last", "config")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    offset: int
    data: bytes
    last: bool
    config: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., config: _Optional[bytes] = ...) -> None: ...

class RaftTimeoutNow(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("cluster", "sender", "recipient", "term", "vote_request", "vote_response", "append_request", "append_response", "snapshot_chunk", "timeout_now")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    VOTE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPEND_REQUEST_FIELD_NUMBER: _ClassVar[int]
    APPEND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    sender: str
    recipient: str
    term: int
    vote_request: RaftVoteRequest
    vote_response: RaftVoteResponse
    append_request: RaftAppendRequest
    append_response: RaftAppendResponse
    snapshot_chunk: RaftSnapshotChunk
    timeout_now: RaftTimeoutNow
    def __init__(self, cluster: _Optional[str] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., term: _Optional[int] = ..., vote_request: _Optional[_Union[RaftVoteRequest, _Mapping]] = ..., vote_response: _Optional[_Union[RaftVoteResponse, _Mapping]] = ..., append_request: _Optional[_Union[RaftAppendRequest, _Mapping]] = ..., append_response: _Optional[_Union[RaftAppendResponse, _Mapping]] = ..., snapshot_chunk: _Optional[_Union[RaftSnapshotChunk, _Mapping]] = ..., timeout_now: _Optional[_Union[RaftTimeoutNow, _Mapping]] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ...) -> None: ...

class RaftSendReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
