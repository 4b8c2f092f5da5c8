//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod ansible;
pub mod cluster;
pub mod module;
pub mod hostroot;
pub mod pkgrepo;
