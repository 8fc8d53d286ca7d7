//! ggml block-quantised formats: quantise, dequantise and fused dot products.
