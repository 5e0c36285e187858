//! The synthetic CT phantom: labels present, HU per organ, anatomy on the right side, seeding.

use cads::data::orientation::orientation_code;
use cads::data::phantom::{phantom, PhantomConfig};

#[test]
fn phantom_has_every_organ_with_realistic_hu() {
    let cfg = PhantomConfig {
        dims: [64, 64, 48],
        spacing_mm: [5.0, 5.0, 6.0],
        noise_hu: 20.0,
        seed: 3,
    };
    let (img, lab) = phantom(&cfg).unwrap();
    assert_eq!(img.dims, [64, 64, 48]);
    assert_eq!(orientation_code(&img.affine), "RAS");
    assert!(img.same_grid(&lab, 0.0));
    assert_eq!(
        lab.distinct_values(),
        (0..=7).map(|l| l as f32).collect::<Vec<_>>()
    );
    // Mean HU per label, and the noise standard deviation inside the liver core.
    let mut sum = [0f64; 8];
    let mut cnt = [0usize; 8];
    let mut x_sum = [0f64; 8];
    for k in 0..48 {
        for j in 0..64 {
            for i in 0..64 {
                let l = lab.get(i, j, k).unwrap() as usize;
                sum[l] += img.get(i, j, k).unwrap() as f64;
                cnt[l] += 1;
                x_sum[l] += img.world([i as f64, j as f64, k as f64])[0];
            }
        }
    }
    let mean = |l: usize| sum[l] / cnt[l] as f64;
    assert!((mean(1) - 60.0).abs() < 3.0, "liver {}", mean(1));
    assert!((mean(2) - 45.0).abs() < 3.0, "spleen {}", mean(2));
    assert!(mean(3) > 30.0 && mean(3) < 150.0, "kidney {}", mean(3));
    assert!((mean(5) + 850.0).abs() < 3.0 && (mean(6) + 850.0).abs() < 3.0);
    assert!(mean(7) > 250.0 && mean(7) < 700.0, "spine {}", mean(7));
    // RAS: +x is the patient's right, where the liver and the right lung lie.
    assert!(x_sum[1] / cnt[1] as f64 > 0.0 && x_sum[5] / cnt[5] as f64 > 0.0);
    assert!(x_sum[2] / (cnt[2] as f64) < 0.0 && x_sum[6] / (cnt[6] as f64) < 0.0);
    let (lo, hi, _) = img.stats();
    assert!(lo >= -1024.0 && hi <= 3071.0 && lo < -900.0);
}

#[test]
fn phantom_is_seeded() {
    let cfg = |seed| PhantomConfig {
        dims: [20, 18, 16],
        spacing_mm: [2.0, 2.0, 2.0],
        noise_hu: 10.0,
        seed,
    };
    assert_eq!(phantom(&cfg(1)).unwrap(), phantom(&cfg(1)).unwrap());
    assert_ne!(
        phantom(&cfg(1)).unwrap().0.data,
        phantom(&cfg(2)).unwrap().0.data
    );
    assert!(phantom(&PhantomConfig {
        dims: [0, 4, 4],
        ..cfg(1)
    })
    .is_err());
    assert!(phantom(&PhantomConfig {
        spacing_mm: [0.0, 1.0, 1.0],
        ..cfg(1)
    })
    .is_err());
}
