//! Experts as the layers above see them: where each lies in the file (the directory and its
//! read plans) and the [`ExpertSource`] trait through which the forward pass reaches them.
//!
//! This module sits below both the streaming layer (`crate::stream`, which implements
//! [`ExpertSource`] over a pool of slots) and the engine (which consumes it); it imports
//! neither.

#![forbid(unsafe_code)]

pub mod layout;
pub mod plan;
pub mod source;

pub use layout::{
    is_low_precision_name, low_precision_name, ExpertDirectory, ExpertLoc, ExpertShape, MatrixLoc,
    Precision, LOW_PRECISION_TYPE_KEY,
};
pub use plan::{min_pool_bytes, slot_bytes, ReadPlan, ALIGN};
pub use source::{ExpertSource, ExpertView, ReadKind, ResidentExperts};
