//! Devices by name: [`A`] is device 0, the one [`name_of`](crate::name_of) calls "A",
//! [`B`] is device 1, and so on to [`H`]. Scenarios, tests and the demo use these, so a
//! device is written the way the spec's tables and the simulator's reports write it.
//!
//! ```
//! use dcgka_sim::name_of;
//! use dcgka_sim::names::{A, B, C, D, E, F, G, H};
//!
//! for (d, name) in [A, B, C, D, E, F, G, H].into_iter().zip(["A", "B", "C", "D", "E", "F", "G", "H"]) {
//!     assert_eq!(name_of(d), name);
//! }
//! ```

use crate::Dev;

/// Device 0, named "A".
pub const A: Dev = 0;
/// Device 1, named "B".
pub const B: Dev = 1;
/// Device 2, named "C".
pub const C: Dev = 2;
/// Device 3, named "D".
pub const D: Dev = 3;
/// Device 4, named "E".
pub const E: Dev = 4;
/// Device 5, named "F".
pub const F: Dev = 5;
/// Device 6, named "G".
pub const G: Dev = 6;
/// Device 7, named "H".
pub const H: Dev = 7;
