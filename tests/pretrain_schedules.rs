//! The CADS schedules against their closed forms, the presets through JSON (bad values named),
//! and the resume checks (execution changes accepted, epoch changes explained).

use cads::pretrain::{CadsConfig, CadsSchedules};

#[test]
fn schedules_follow_their_closed_forms() {
    let config = CadsConfig::cads();
    let per_epoch = 100u64;
    let s = CadsSchedules::new(&config, per_epoch).unwrap();
    let total = (150 * per_epoch) as f64;
    let warm = (10 * per_epoch) as f64;
    let close = |what: &str, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1e-3),
            "{what}: {got} vs {want}"
        )
    };
    let peak = 5.625e-4; // batch 192 = the reference batch
    assert_eq!(config.peak_lr(), peak);
    for it in [0u64, 1, 499, 999, 1000, 1001, 7000, 14_999, 20_000] {
        let v = s.at(it);
        let i = it.min(14_999) as f64;
        // lr: numpy linspace(0, peak, warm) then cosine to 2e-6 over the rest.
        let lr = if i < warm {
            peak * i / (warm - 1.0)
        } else {
            2e-6 + 0.5
                * (peak - 2e-6)
                * (1.0 + (std::f64::consts::PI * (i - warm) / (total - warm)).cos())
        };
        close(&format!("lr at {it}"), v.lr, lr);
        let cos = 1.0 + (std::f64::consts::PI * i / total).cos();
        close(
            &format!("wd at {it}"),
            v.weight_decay,
            0.4 + 0.5 * (0.04 - 0.4) * cos,
        );
        close(
            &format!("momentum at {it}"),
            v.teacher_momentum,
            1.0 + 0.5 * (0.996 - 1.0) * cos,
        );
        let epoch = it / per_epoch;
        assert_eq!(v.epoch, epoch);
        let tt = if epoch < 50 {
            0.04 + epoch as f64 * (0.07 - 0.04) / 49.0
        } else {
            0.07
        };
        close(
            &format!("teacher temp at epoch {epoch}"),
            v.teacher_temp,
            tt,
        );
        assert_eq!(v.last_layer_frozen, epoch < 3, "freeze at epoch {epoch}");
    }
    // Linear scaling: batch 96 halves the peak.
    let half = CadsConfig {
        batch_size: 96,
        ..CadsConfig::cads()
    };
    close("half-batch peak", half.peak_lr(), peak / 2.0);
}

#[test]
fn presets_round_trip_through_json_and_bad_values_are_named() {
    for config in [CadsConfig::cads(), CadsConfig::tiny()] {
        config.validate().unwrap();
        let json = config.to_json().unwrap();
        assert_eq!(CadsConfig::from_json(&json).unwrap(), config);
    }
    let cads = CadsConfig::cads();
    assert_eq!(cads.head.out_dim, 60000);
    assert_eq!(cads.encoder.embed_dims, [64, 128, 320, 512]);
    assert_eq!(CadsConfig::preset("tiny").unwrap(), CadsConfig::tiny());
    assert!(CadsConfig::preset("huge").is_err());
    let bad = CadsConfig {
        student_temp: 0.0,
        ..CadsConfig::tiny()
    };
    let err = CadsConfig::from_json(&bad.to_json().unwrap()).unwrap_err();
    assert!(err.to_string().contains("student_temp"), "{err}");
}

#[test]
fn resume_checks_accept_execution_changes_and_explain_epoch_changes() {
    use cads::pretrain::resume::check_resume;
    let saved = CadsConfig {
        epochs: 4,
        ..CadsConfig::tiny()
    };
    let ipe = 5;
    // The same recipe: nothing to say.
    assert_eq!(check_resume(&saved, &saved, ipe, 12, false).unwrap(), None);
    // Execution-only fields may change.
    let faster = CadsConfig {
        read_every: 7,
        checkpoint_blocks: true,
        ..saved.clone()
    };
    let note = check_resume(&saved, &faster, ipe, 12, false)
        .unwrap()
        .unwrap();
    assert!(
        note.contains("read_every 1 -> 7") && note.contains("checkpoint_blocks"),
        "{note}"
    );
    // Any recipe field may not, and is named.
    let other = CadsConfig {
        student_temp: 0.2,
        ..saved.clone()
    };
    let err = check_resume(&saved, &other, ipe, 12, false).unwrap_err();
    assert!(
        err.to_string().contains("student_temp: 0.1 -> 0.2"),
        "{err}"
    );
    // More epochs at iteration 1: only iteration 0 was taken, equal under both lengths.
    let longer = CadsConfig {
        epochs: 6,
        ..saved.clone()
    };
    let note = check_resume(&saved, &longer, ipe, 1, false)
        .unwrap()
        .unwrap();
    assert!(note.contains("straight 6-epoch run"), "{note}");
    // At iteration 12 the cosines differ: refused, with the first difference, the jump and
    // the ways on; accepted with extend_schedules.
    let err = check_resume(&saved, &longer, ipe, 12, false)
        .unwrap_err()
        .to_string();
    for part in [
        "first at iteration 1",
        "--epochs 4",
        "--extend-schedules",
        "weight decay",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    let note = check_resume(&saved, &longer, ipe, 12, true)
        .unwrap()
        .unwrap();
    assert!(
        note.contains("from here the schedules are the 6-epoch run's"),
        "{note}"
    );
    // Fewer epochs are never accepted (--max-steps stops early on the same schedules).
    let shorter = CadsConfig {
        epochs: 3,
        ..saved.clone()
    };
    let err = check_resume(&saved, &shorter, ipe, 12, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-steps"), "{err}");
}
