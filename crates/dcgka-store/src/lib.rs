//! # dcgka-store
//!
//! A device store for [`dcgka`] on SQLite: the implementation of the device layer's
//! storage seam ([`dcgka_device::Storage`]) that keeps one device in one file.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consts;
mod encode;
mod error;
mod key;
mod seal;
mod store;

pub use error::StoreError;
pub use key::{KdfParams, StorageKey};
pub use store::{CommitStats, InboxEvent, Store};
