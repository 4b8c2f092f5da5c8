//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod ansible;
pub mod cluster;
pub mod hostroot;
pub mod module;
pub mod pkgrepo;
pub mod world;
