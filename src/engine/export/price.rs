//! What an export will cost, for `--dry-run`: retrieval per tier, and a month of storage in
//! the chosen S3 class, from the price table below.
//!
//! Prices change and differ by region; the table carries the region and the date it was
//! taken, and the plan prints both, so nobody mistakes the estimate for a quote. It counts
//! what the export itself causes: Glacier's retrieval fee per GB and per request for each
//! tier, S3's PUT-class requests (one per small object, or one per part plus two for a
//! multipart upload), and a month of storage. It leaves out data transfer (none from an EC2
//! instance in the vault's region; internet transfer out otherwise, priced separately) and
//! the early-deletion minimums of the archive classes (90 days for GLACIER, 180 for
//! DEEP_ARCHIVE).

use crate::config::StorageClass;
use crate::glacier::Tier;

/// The region and date of the table.
pub const PRICED_REGION: &str = "us-east-1";
pub const PRICED_ON: &str = "2026-11-01";

const GB: f64 = 1_073_741_824.0;

/// Glacier's retrieval fees for one tier: per GB retrieved, per 1,000 jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieval {
    pub tier: Tier,
    pub per_gb: f64,
    pub per_1000_requests: f64,
}

/// Vault retrievals, US East (N. Virginia).
pub const RETRIEVAL: [Retrieval; 3] = [
    Retrieval {
        tier: Tier::Expedited,
        per_gb: 0.03,
        per_1000_requests: 10.0,
    },
    Retrieval {
        tier: Tier::Standard,
        per_gb: 0.01,
        per_1000_requests: 0.05,
    },
    Retrieval {
        tier: Tier::Bulk,
        per_gb: 0.0025,
        per_1000_requests: 0.025,
    },
];

/// S3's storage per GB-month, and PUT/COPY/POST requests per 1,000, for one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storage {
    pub class: StorageClass,
    pub per_gb_month: f64,
    pub per_1000_puts: f64,
}

pub const STORAGE: [Storage; 6] = [
    Storage {
        class: StorageClass::DeepArchive,
        per_gb_month: 0.00099,
        per_1000_puts: 0.05,
    },
    Storage {
        class: StorageClass::Glacier,
        per_gb_month: 0.0036,
        per_1000_puts: 0.03,
    },
    Storage {
        class: StorageClass::GlacierIr,
        per_gb_month: 0.004,
        per_1000_puts: 0.02,
    },
    Storage {
        class: StorageClass::StandardIa,
        per_gb_month: 0.0125,
        per_1000_puts: 0.01,
    },
    Storage {
        class: StorageClass::IntelligentTiering,
        per_gb_month: 0.023,
        per_1000_puts: 0.005,
    },
    Storage {
        class: StorageClass::Standard,
        per_gb_month: 0.023,
        per_1000_puts: 0.005,
    },
];

/// The cost of retrieving `archives` archives of `bytes` in all with `tier`, in dollars.
pub fn retrieval(tier: Tier, archives: u64, bytes: u64) -> f64 {
    let r = RETRIEVAL
        .iter()
        .find(|r| r.tier == tier)
        .copied()
        .unwrap_or(RETRIEVAL[1]);
    bytes as f64 / GB * r.per_gb + archives as f64 / 1000.0 * r.per_1000_requests
}

/// The cost of writing `requests` PUT-class requests and keeping `bytes` for a month.
pub fn storage(class: StorageClass, requests: u64, bytes: u64) -> (f64, f64) {
    let s = STORAGE
        .iter()
        .find(|s| s.class == class)
        .copied()
        .unwrap_or(STORAGE[0]);
    (
        requests as f64 / 1000.0 * s.per_1000_puts,
        bytes as f64 / GB * s.per_gb_month,
    )
}

/// PUT-class requests to write one object of `size` bytes: one PutObject, or Create, one
/// UploadPart per part, and Complete.
pub fn put_requests(size: u64) -> u64 {
    let part = super::s3::parts::part_size(size);
    match size <= part {
        true => 1,
        false => size.div_ceil(part) + 2,
    }
}

/// Dollars, with cents (or a fraction of a cent, said as such).
pub fn dollars(x: f64) -> String {
    if x > 0.0 && x < 0.01 {
        "under $0.01".to_owned()
    } else {
        format!("${x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::treehash::MIB;

    #[test]
    fn every_tier_and_class_has_a_price() {
        for t in [Tier::Expedited, Tier::Standard, Tier::Bulk] {
            assert!(RETRIEVAL.iter().any(|r| r.tier == t));
        }
        for c in StorageClass::ALL {
            assert!(STORAGE.iter().any(|s| s.class == c));
        }
    }

    #[test]
    fn costs_scale_with_bytes_and_requests() {
        let tib = 1u64 << 40;
        // 1 TiB at Standard: $10.24 per TiB plus $0.05 per 1,000 jobs.
        let c = retrieval(Tier::Standard, 1000, tib);
        assert!((c - (10.24 + 0.05)).abs() < 1e-9, "{c}");
        let (puts, month) = storage(StorageClass::DeepArchive, 2000, tib);
        assert!((puts - 0.10).abs() < 1e-9, "{puts}");
        assert!((month - 1024.0 * 0.00099).abs() < 1e-9, "{month}");
        assert!(retrieval(Tier::Expedited, 1, tib) > retrieval(Tier::Bulk, 1, tib));
    }

    #[test]
    fn requests_per_object_follow_the_part_size() {
        assert_eq!(put_requests(0), 1);
        assert_eq!(put_requests(8 * MIB), 1);
        assert_eq!(put_requests(8 * MIB + 1), 4);
        assert_eq!(put_requests(100 * MIB), 13 + 2);
        assert_eq!(dollars(0.004), "under $0.01");
        assert_eq!(dollars(12.346), "$12.35");
        assert_eq!(dollars(0.0), "$0.00");
    }
}
