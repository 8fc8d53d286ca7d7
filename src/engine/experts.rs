//! The expert layout and source, as the engine names them (defined in [`crate::expert`]).

pub use crate::expert::*;
