//! Scenario tests across the module: strategic merge of pod templates and server-side apply.

use serde_json::{Value, json};

use super::*;

/// The built-in rules of a Deployment.
pub(super) fn deploy_schema() -> BuiltinSchema {
    BuiltinSchema::for_kind("Deployment")
}

/// A field path element.
pub(super) fn f(s: &str) -> PathElement {
    PathElement::Field(s.to_string())
}
