//! The samples a command runs: `.npy` and `.npz` files and folders of images, checked against
//! the inputs the model declares, with their labels.
//!
//! Owns: `dataset` (the sample sets and labels, by file kind), `float16` (numpy's float16
//! arrays, which the npy reader lacks) and `images` (a folder of PNG/JPEG images made into
//! model inputs). May use `engine` (a model's input names and declared shapes)
//! and `passes`; nothing above.

pub mod dataset;
pub mod float16;
pub mod images;
