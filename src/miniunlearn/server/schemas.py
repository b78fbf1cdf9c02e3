"""The shapes of requests and answers (pydantic): what /openapi.json publishes and every request is checked against.

Unknown fields are refused (``extra="forbid"``), numbers must be finite, and keys are integers or
one-line text -- the forms :mod:`miniunlearn.data.keys` accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, model_validator

Status = Literal["queued", "running", "done", "failed"]
KeyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256,
                                           pattern=r"^[^\r\n\x00]+$")]
Key = StrictInt | KeyText
Row = Annotated[StrictInt, Field(ge=0, le=2**53)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Label = StrictInt | float | str | StrictBool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeletionCreate(_Strict):
    """A deletion request: the people (``keys``) or training rows (``rows``) to forget, exactly one."""

    keys: list[Key] | None = Field(None, min_length=1, description="row keys (user ids) whose rows to forget")
    rows: list[Row] | None = Field(None, min_length=1, description="0-based training-row numbers of the current base")
    tol: Annotated[float, Field(gt=1e-12, le=1, allow_inf_nan=False)] | None = Field(
        None, description="certify ||w - w_R|| <= tol * ||w - w_T|| (default: the server's --tol)")
    epsilon: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] | None = Field(
        None, description="publish an (epsilon, delta)-certified release (with delta)")
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None = Field(None, description="with epsilon")

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.keys is None) == (self.rows is None):
            raise ValueError("give exactly one of 'keys' and 'rows'")
        if (self.epsilon is None) != (self.delta is None):
            raise ValueError("'epsilon' and 'delta' go together: give both or neither")
        return self

    def canonical_names(self) -> list:
        """Keys as their canonical text (integers written plainly), or the row numbers."""
        if self.keys is not None:
            return [str(k) for k in self.keys]
        return list(self.rows)


class DeletionAccepted(BaseModel):
    id: str
    status: Status
    idempotency_key: str | None = None
    received_at: str
    replayed: bool = Field(False, description="true when an earlier request with this Idempotency-Key is returned")


class Release(BaseModel):
    epsilon: float | None = None
    delta: float | None = None
    sigma: float | None = None
    mechanism: str | None = None


class Timings(BaseModel):
    solve_s: float | None = None
    queue_to_done_s: float | None = None


class DeletionStatus(BaseModel):
    id: str
    status: Status
    idempotency_key: str | None = None
    received_at: str
    started_at: str | None = None
    done_at: str | None = None
    requested_by: Literal["rows", "keys"]
    n_named: int | None = Field(None, description="keys or rows named (while the request is pending)")
    n_keys: int | None = None
    n_rows: int | None = None
    method: str | None = None
    tol: float | None = None
    certificate: float | None = Field(None, description="certified bound on ||w - w_R|| (all parameters)")
    certified_relative: float | None = None
    release: Release | None = None
    model_sha256: str | None = Field(None, description="SHA-256 of the model this deletion produced")
    model_sha256_before: str | None = None
    ledger_request: int | None = None
    coalesced_requests: int | None = Field(None, description="requests served by the same solve")
    timings: Timings | None = None
    note: str | None = None
    error: str | None = None


class Signature(BaseModel):
    algorithm: Literal["Ed25519"]
    public_key_sha256: str
    value: str


class Receipt(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: str
    run: dict[str, Any]
    request_id: str
    key_sha256: list[str]
    received_at: str
    done_at: str
    method: str
    certificate: float | None = None
    model_sha256_before: str
    model_sha256_after: str
    ledger_row_sha256: str | None = None
    signature: Signature


class PredictRequest(_Strict):
    rows: list[dict[str, Finite]] = Field(min_length=1, description="one object per row: feature name -> value")
    proba: bool = Field(False, description="also return each class's probability")


class PredictAnswer(BaseModel):
    labels: list[Label]
    probabilities: list[dict[str, float]] | None = None
    classes: list[Label]
    model_sha256: str
    ledger_request: int | None = None


class ModelInfo(BaseModel):
    model_sha256: str
    ledger_request: int | None = None
    base_generation: int
    certificate: float | None = None
    certified_relative: float | None = None
    n_forgotten_since_base: int
    n_features: int
    classes: list[Label]
    feature_names: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    model_sha256: str
    queue_depth: int
    base_generation: int


class Error(BaseModel):
    error: str = Field(description="one line naming the problem")
    detail: list[dict[str, Any]] | None = None
