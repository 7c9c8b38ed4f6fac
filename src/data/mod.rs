//! The samples a command runs: `.npy` and `.npz` files, folders of images and arrays handed
//! over in memory, checked against the inputs the model declares, with their labels.
//!
//! Owns: `dataset` (the sample sets and labels, by file kind), `float16` (numpy's float16
//! arrays, which the npy reader lacks), `images` (a folder of PNG/JPEG images made into
//! model inputs) and `memory` (arrays registered under a path, read in place of a file).
//! May use `engine` (a model's input names and declared shapes) and `passes`; nothing above.

pub mod dataset;
pub mod float16;
pub mod images;
pub mod memory;
