//! The samples a command runs: `.npy` and `.npz` files, folders of images and arrays handed
//! over in memory, checked against the inputs the model declares, with their labels.
//!
//! Owns: `dataset` (the sample sets and labels, by file kind), `npy` (`.npy` files and `.npz`
//! archives, stored or deflated, read without trusting their headers), `cap` (the memory a
//! data set may take, charged before anything is allocated), `raw` (an array as read, before
//! its conversion to the input's type), `float16` (numpy's float16
//! arrays, which the npy reader lacks), `images` (a folder of PNG/JPEG images made into
//! model inputs) and `memory` (arrays registered under a path, read in place of a file).
//! May use `engine` (a model's input names and declared shapes) and `passes`; nothing above.

pub mod cap;
pub mod dataset;
pub mod float16;
pub mod images;
pub mod memory;
pub mod npy;
pub mod raw;
