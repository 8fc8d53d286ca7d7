//! The blocks a family's forward pass is built from: attention, the router, the expert FFN
//! and the MoE step that ties router, expert source and FFNs together. Each block is a set of
//! functions over the layer's weights, the session's state it needs and the session's scratch;
//! a family chooses among their variants in its file under `engine::arch`.

pub mod attention;
pub mod ffn;
pub mod moe;
pub mod router;
pub(crate) mod scratch;

/// Tokens an expert FFN processes at once in a prompt batch: each weight row is read once per
/// group, and the group's intermediate activations (`group x ffn`) stay small.
pub const FFN_GROUP: usize = 64;
