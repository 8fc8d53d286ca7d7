//! The inference engine: model loading, the forward pass, sessions.

#![forbid(unsafe_code)]

pub mod arch;
pub mod blocks;
pub mod budget;
pub mod config;
pub mod divergence;
pub mod experts;
pub mod generate;
pub mod model;
pub mod perplexity;
pub mod predictor;
pub mod profile;
pub mod session;
pub mod weights;

pub use arch::Family;
pub use budget::BudgetPlan;
pub use config::ModelConfig;
pub use experts::{ExpertDirectory, ExpertSource, ExpertView, Precision};
pub use model::{Backend, LoadOptions, Model};
pub use predictor::{ExpertStats, PredictionOptions, PredictorKind};
pub use session::{CancelHandle, PredictionStats, Routing, RoutingObserver, RoutingTrace, Session};
