//! The weight fault model: every bit of every stored weight flips independently with
//! probability BER. Flips are sampled directly, not bit by bit: the gaps between flipped bits
//! of a tensor's bit space are geometric, which is the same Bernoulli process.
//!
//! Each tensor draws from its own stream, seeded by (seed, trial, BER, tensor name): models
//! that share a tensor get the same flips in it in every trial (the original and its hardened
//! variants are compared on the same faults), whatever other tensors a model has and whatever
//! the order or the thread that runs the trial.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How weights are stored in the faulty memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum WeightFormat {
    /// IEEE float32.
    #[value(name = "float32")]
    #[serde(rename = "float32")]
    Float32,
    /// Signed 32-bit fixed point with 16 fraction bits (saturating).
    #[value(name = "q15.16")]
    #[serde(rename = "q15.16")]
    Q15_16,
    /// 8-bit integers with one symmetric scale per tensor (max |w| / 127).
    #[value(name = "int8")]
    #[serde(rename = "int8")]
    Int8,
    /// IEEE half precision: float32 weights as a float16 deployment stores them.
    #[value(name = "float16")]
    #[serde(rename = "float16")]
    Float16,
    /// bfloat16 (float32's exponent, 7 fraction bits).
    #[value(name = "bfloat16")]
    #[serde(rename = "bfloat16")]
    BFloat16,
}

/// A tensor as stored: one word per value (the low `bits()` bits are used) and its scale;
/// for an integer tensor (`weights`), its own words and its element type.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub words: Vec<u32>,
    pub scale: f32,
    pub integer: Option<i32>,
}

impl WeightFormat {
    pub fn bits(self) -> u32 {
        match self {
            WeightFormat::Float32 | WeightFormat::Q15_16 => 32,
            WeightFormat::Float16 | WeightFormat::BFloat16 => 16,
            WeightFormat::Int8 => 8,
        }
    }

    pub fn store(self, values: &[f32]) -> StoredTensor {
        match self {
            WeightFormat::Float32 => StoredTensor {
                words: values.iter().map(|v| v.to_bits()).collect(),
                scale: 1.0,
                integer: None,
            },
            WeightFormat::Q15_16 => StoredTensor {
                words: values
                    .iter()
                    .map(|v| {
                        (f64::from(*v) * 65536.0)
                            .round()
                            .clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32
                    })
                    .collect(),
                scale: 1.0 / 65536.0,
                integer: None,
            },
            WeightFormat::Float16 => StoredTensor {
                words: values
                    .iter()
                    .map(|v| u32::from(half::f16::from_f32(*v).to_bits()))
                    .collect(),
                scale: 1.0,
                integer: None,
            },
            WeightFormat::BFloat16 => StoredTensor {
                words: values
                    .iter()
                    .map(|v| u32::from(half::bf16::from_f32(*v).to_bits()))
                    .collect(),
                scale: 1.0,
                integer: None,
            },
            WeightFormat::Int8 => {
                let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 1.0 };
                let words = values
                    .iter()
                    .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8 as u32)
                    .collect();
                StoredTensor {
                    words,
                    scale,
                    integer: None,
                }
            }
        }
    }

    pub fn load(self, word: u32, scale: f32) -> f32 {
        match self {
            WeightFormat::Float32 => f32::from_bits(word),
            WeightFormat::Q15_16 => (f64::from(word as i32) * f64::from(scale)) as f32,
            WeightFormat::Int8 => f32::from(word as u8 as i8) * scale,
            WeightFormat::Float16 => f32::from(half::f16::from_bits(word as u16)),
            WeightFormat::BFloat16 => f32::from(half::bf16::from_bits(word as u16)),
        }
    }
}

/// One flipped bit: element `element` of tensor `tensor`, bit `bit` of its stored word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flip {
    pub tensor: usize,
    pub element: usize,
    pub bit: u32,
}

/// splitmix64: a well-mixed 64-bit combination of seed parts.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a tensor name: stable across platforms and Rust versions.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stream of one tensor in one trial at one BER.
pub fn tensor_rng(seed: u64, trial: u64, ber: f64, name: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ trial) ^ ber.to_bits()) ^ name_hash(name))
}

/// Bits flipped in a tensor of `elements` values when each of the allowed bit positions of
/// each value flips with probability `ber`: geometric gaps over the `elements * bits.len()`
/// bit space, so the work is proportional to the number of flips.
pub fn sample_tensor_flips(rng: &mut impl Rng, elements: usize, bits: &[u32], ber: f64) -> Vec<(usize, u32)> {
    let space = (elements as u64).saturating_mul(bits.len() as u64);
    if ber <= 0.0 || space == 0 {
        return Vec::new();
    }
    let gap = |rng: &mut dyn rand::RngCore| -> u64 {
        if ber >= 1.0 {
            return 0;
        }
        // P(gap = k) = (1 - p)^k p, by inversion; 1 - U lies in (0, 1].
        let u: f64 = 1.0 - rng.random::<f64>();
        let k = (u.ln() / (-ber).ln_1p()).floor();
        if k >= space as f64 { u64::MAX } else { k as u64 }
    };
    let mut flips = Vec::new();
    let mut position = gap(rng);
    while position < space {
        let per_value = bits.len() as u64;
        flips.push(((position / per_value) as usize, bits[(position % per_value) as usize]));
        position = position.saturating_add(1).saturating_add(gap(rng));
    }
    flips
}

/// The flips of one trial over named tensors of the given sizes.
pub fn sample_flips(names_and_sizes: &[(&str, usize)], bits: &[u32], ber: f64, seed: u64, trial: u64) -> Vec<Flip> {
    let tensors: Vec<(&str, usize, &[u32])> = names_and_sizes.iter().map(|(n, s)| (*n, *s, bits)).collect();
    sample_flips_in(&tensors, ber, seed, trial)
}

/// The flips of one trial over named tensors of the given sizes, each with the bit
/// positions that may flip in it.
pub fn sample_flips_in(tensors: &[(&str, usize, &[u32])], ber: f64, seed: u64, trial: u64) -> Vec<Flip> {
    let mut flips = Vec::new();
    for (tensor, (name, size, bits)) in tensors.iter().enumerate() {
        let mut rng = tensor_rng(seed, trial, ber, name);
        flips.extend(
            sample_tensor_flips(&mut rng, *size, bits, ber)
                .into_iter()
                .map(|(element, bit)| Flip { tensor, element, bit }),
        );
    }
    flips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_formats_store_16_bit_words_that_load_back() {
        for format in [WeightFormat::Float16, WeightFormat::BFloat16] {
            let stored = format.store(&[0.5, -3.0, 0.0]);
            assert_eq!(format.bits(), 16);
            assert!(stored.words.iter().all(|w| *w <= 0xFFFF));
            let back: Vec<f32> = stored.words.iter().map(|w| format.load(*w, stored.scale)).collect();
            assert_eq!(back, [0.5, -3.0, 0.0]);
        }
        // float16's top exponent bit: 0.5 -> 32768; bfloat16's: 0.5 -> 2^127.
        let f16 = WeightFormat::Float16.store(&[0.5]).words[0] ^ (1 << 14);
        assert_eq!(WeightFormat::Float16.load(f16, 1.0), 32768.0);
        let bf16 = WeightFormat::BFloat16.store(&[0.5]).words[0] ^ (1 << 14);
        assert_eq!(WeightFormat::BFloat16.load(bf16, 1.0), 2f32.powi(127));
    }

    #[test]
    fn flipping_bit_30_of_a_float_gives_the_expected_value() {
        let stored = WeightFormat::Float32.store(&[0.02]);
        let flipped = WeightFormat::Float32.load(stored.words[0] ^ (1 << 30), stored.scale);
        // 0.02 = 1.28 * 2^-6; bit 30 adds 128 to the biased exponent: 1.28 * 2^122.
        assert_eq!(flipped, 1.28f32 * 2f32.powi(122));
        assert!((flipped - 6.805_647e36).abs() / flipped < 1e-6);
    }

    #[test]
    fn fixed_point_formats_round_trip_and_flip() {
        let q = WeightFormat::Q15_16;
        let s = q.store(&[1.5, -0.25]);
        assert_eq!((q.load(s.words[0], s.scale), q.load(s.words[1], s.scale)), (1.5, -0.25));
        // Bit 31 is the sign of the two's complement word: 1.5 becomes 1.5 - 32768.
        assert_eq!(q.load(s.words[0] ^ (1 << 31), s.scale), 1.5 - 32768.0);
        let i = WeightFormat::Int8;
        let s = i.store(&[0.5, -1.0, 0.25]);
        assert_eq!(s.scale, 1.0 / 127.0);
        assert_eq!(i.load(s.words[1], s.scale), -1.0);
        // Bit 7 of int8 127 (0x7f) gives -1.
        let top = i.store(&[1.0]);
        assert_eq!(i.load(top.words[0] ^ 0x80, top.scale), -1.0 / 127.0);
    }

    #[test]
    fn flip_counts_follow_the_binomial_and_positions_are_uniform() {
        let bits: Vec<u32> = (0..32).collect();
        let (elements, ber, trials) = (10_000usize, 1e-4, 2_000u64);
        let n = (elements * 32) as f64;
        let mut counts = Vec::new();
        let mut per_bit = [0u64; 32];
        let mut per_decile = [0u64; 10];
        for trial in 0..trials {
            let flips = sample_flips(&[("w", elements)], &bits, ber, 7, trial);
            counts.push(flips.len() as f64);
            for f in flips {
                per_bit[f.bit as usize] += 1;
                per_decile[f.element * 10 / elements] += 1;
            }
        }
        let mean = counts.iter().sum::<f64>() / trials as f64;
        let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        let (want_mean, want_var) = (n * ber, n * ber * (1.0 - ber));
        // Mean of 2000 draws: standard error sqrt(32/2000) = 0.13; allow 5 of them.
        assert!(
            (mean - want_mean).abs() < 5.0 * (want_var / trials as f64).sqrt(),
            "mean {mean} vs {want_mean}"
        );
        assert!((var / want_var - 1.0).abs() < 0.15, "variance {var} vs {want_var}");
        // Uniform positions: chi-square over the 32 bit positions and 10 element deciles.
        let total = counts.iter().sum::<f64>();
        let chi2 = |observed: &[u64]| {
            let expected = total / observed.len() as f64;
            observed
                .iter()
                .map(|o| (*o as f64 - expected).powi(2) / expected)
                .sum::<f64>()
        };
        assert!(
            chi2(&per_bit) < 61.1,
            "bits chi2 {} (31 dof, p = 0.001)",
            chi2(&per_bit)
        );
        assert!(
            chi2(&per_decile) < 27.9,
            "deciles chi2 {} (9 dof, p = 0.001)",
            chi2(&per_decile)
        );
    }

    #[test]
    fn a_tensor_gets_the_same_flips_whatever_else_is_sampled() {
        let bits: Vec<u32> = (0..32).collect();
        let alone = sample_flips(&[("conv.w", 5000)], &bits, 1e-3, 1, 3);
        let with_bound = sample_flips(&[("bound", 10), ("conv.w", 5000)], &bits, 1e-3, 1, 3);
        let shared: Vec<(usize, u32)> = with_bound
            .iter()
            .filter(|f| f.tensor == 1)
            .map(|f| (f.element, f.bit))
            .collect();
        assert_eq!(alone.iter().map(|f| (f.element, f.bit)).collect::<Vec<_>>(), shared);
        assert!(!alone.is_empty());
        assert_ne!(
            alone,
            sample_flips(&[("conv.w", 5000)], &bits, 1e-3, 1, 4),
            "another trial, other flips"
        );
    }

    #[test]
    fn restricted_bits_only_flip_there() {
        let exponent: Vec<u32> = (23..=30).collect();
        let flips = sample_flips(&[("w", 1000)], &exponent, 1e-2, 5, 0);
        assert!(!flips.is_empty());
        assert!(flips.iter().all(|f| (23..=30).contains(&f.bit)));
    }
}
