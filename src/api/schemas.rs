//! The envelopes every answer travels in, and the schemas of the enums the views borrow
//! from the model and the store (derived from their own lists of values, so a new status
//! shows up in the document).

use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};
use utoipa::{PartialSchema, ToSchema};

use crate::model::{RunStatus, StepStatus};
use crate::store::{HookKind, HookStatus};

fn string_enum(values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(values))
        .into()
}

fn bool_const(value: bool) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Boolean))
        .enum_values(Some([value]))
        .into()
}

impl PartialSchema for RunStatus {
    fn schema() -> RefOr<Schema> {
        string_enum(RunStatus::ALL.map(RunStatus::as_str))
    }
}
impl ToSchema for RunStatus {}

impl PartialSchema for StepStatus {
    fn schema() -> RefOr<Schema> {
        string_enum(StepStatus::ALL.map(StepStatus::as_str))
    }
}
impl ToSchema for StepStatus {}

/// Every hook status (the store's text values).
pub const HOOK_STATUSES: [HookStatus; 3] =
    [HookStatus::Pending, HookStatus::Resumed, HookStatus::Closed];
/// Every hook kind.
pub const HOOK_KINDS: [HookKind; 2] = [HookKind::Approval, HookKind::ExternalEvent];

impl PartialSchema for HookStatus {
    fn schema() -> RefOr<Schema> {
        string_enum(HOOK_STATUSES.map(HookStatus::as_str))
    }
}
impl ToSchema for HookStatus {}

impl PartialSchema for HookKind {
    fn schema() -> RefOr<Schema> {
        string_enum(HOOK_KINDS.map(HookKind::as_str))
    }
}
impl ToSchema for HookKind {}

/// `true`: the `success` of a success envelope.
#[derive(Clone, Copy, Default)]
pub struct True;

impl Serialize for True {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}
impl PartialSchema for True {
    fn schema() -> RefOr<Schema> {
        bool_const(true)
    }
}
impl ToSchema for True {}

/// `false`: the `success` of an error envelope.
#[derive(Clone, Copy, Default)]
pub struct False;

impl Serialize for False {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}
impl PartialSchema for False {
    fn schema() -> RefOr<Schema> {
        bool_const(false)
    }
}
impl ToSchema for False {}

/// `{"success": true, "data": …}`.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: True,
    pub data: T,
}

/// A page of a listing: `{"success": true, "data": [...], "meta": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct Paged<T> {
    pub success: True,
    pub data: Vec<T>,
    pub meta: Meta,
}

/// Where a page sits in its listing.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[schema(minimum = 1)]
    pub page: u64,
    #[schema(minimum = 1, maximum = 100)]
    pub page_size: u64,
    pub total: u64,
    pub total_pages: u64,
}

/// The error code of an error envelope (`ApiError::code`).
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        string_enum(super::error::ApiError::CODES)
    }
}
impl ToSchema for ErrorCode {}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    pub message: String,
    /// For a VALIDATION_ERROR: `{"field": …}` or `{"diagnostics": [...]}`; otherwise null.
    #[schema(value_type = Value, required = true)]
    pub details: serde_json::Value,
}

/// `{"success": false, "error": {"code", "message", "details"}}`: every failure (seed 004).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub success: False,
    pub error: ErrorDetail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_lists_hold_every_stored_value() {
        for s in ["pending", "resumed", "closed"] {
            assert!(HookStatus::parse(s).is_some_and(|h| HOOK_STATUSES.contains(&h)));
        }
        for s in ["approval", "external_event"] {
            assert!(HookKind::parse(s).is_some_and(|h| HOOK_KINDS.contains(&h)));
        }
    }
}
