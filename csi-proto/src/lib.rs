//! The Container Storage Interface v1 protocol: prost messages and tonic
//! clients and servers for the Identity, Controller and Node services,
//! generated at build time from `proto/csi.proto` (CSI spec v1.12.0).
//!
//! `google.protobuf.BoolValue` and `Int64Value` fields appear as
//! `Option<bool>` and `Option<i64>`, as prost maps the wrapper types.

/// The `csi.v1` package.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod v1 {
    tonic::include_proto!("csi.v1");
}
