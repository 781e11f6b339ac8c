//! The account settings the emulator enforces at InitiateJob, as Glacier does: a `BytesPerHour`
//! data-retrieval policy over the trailing hour of emulated time, and Expedited retrievals
//! refused for want of capacity while on-demand capacity is short and no provisioned unit is
//! unexpired. Driven through the real SDK.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use aws_sdk_glacier::error::ProvideErrorMetadata;
use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{DataRetrievalPolicy, DataRetrievalRule, JobParameters};
use aws_sdk_glacier::Client;
use glacier_emulator::*;
use support::sdk_client;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

async fn setup() -> (Emulator, Client, String) {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    c.create_vault().vault_name("v").send().await.unwrap();
    let id = c
        .upload_archive()
        .vault_name("v")
        .archive_description("a")
        .body(ByteStream::from(vec![7u8; 1000]))
        .send()
        .await
        .unwrap()
        .archive_id()
        .unwrap()
        .to_string();
    (emu, c, id)
}

/// InitiateJob of the whole archive at `tier`: the job id, or the error code.
async fn retrieve(c: &Client, archive_id: &str, tier: &str) -> Result<String, String> {
    let params = JobParameters::builder()
        .r#type("archive-retrieval")
        .archive_id(archive_id)
        .tier(tier)
        .build();
    c.initiate_job()
        .vault_name("v")
        .job_parameters(params)
        .send()
        .await
        .map(|o| o.job_id().unwrap().to_string())
        .map_err(|e| e.code().unwrap_or("<no code>").to_string())
}

#[tokio::test]
async fn bytes_per_hour_refuses_what_the_trailing_hour_cannot_take() {
    let (emu, c, id) = setup().await;
    let rule = DataRetrievalRule::builder()
        .strategy("BytesPerHour")
        .bytes_per_hour(2500)
        .build();
    c.set_data_retrieval_policy()
        .policy(DataRetrievalPolicy::builder().rules(rule).build())
        .send()
        .await
        .unwrap();
    // 1000 bytes each: two fit in 2500 bytes an hour, the third does not.
    retrieve(&c, &id, "Standard").await.unwrap();
    emu.advance(10 * MINUTE);
    retrieve(&c, &id, "Bulk").await.unwrap();
    assert_eq!(
        retrieve(&c, &id, "Standard").await,
        Err("PolicyEnforcedException".to_string())
    );
    assert_eq!(emu.policy_refusals(), 1);
    // An hour after the first, only the second still counts: one more fits.
    emu.advance(51 * MINUTE);
    retrieve(&c, &id, "Standard").await.unwrap();
    assert_eq!(
        retrieve(&c, &id, "Standard").await,
        Err("PolicyEnforcedException".to_string())
    );
    assert_eq!(emu.policy_refusals(), 2);
    // Other strategies refuse nothing here.
    emu.set_retrieval_policy("FreeTier", None);
    retrieve(&c, &id, "Standard").await.unwrap();
    emu.set_retrieval_policy("BytesPerHour", Some(1_000_000));
    retrieve(&c, &id, "Standard").await.unwrap();
    assert_eq!(emu.policy_refusals(), 2);
}

#[tokio::test]
async fn expedited_needs_capacity_only_while_it_is_short() {
    let (emu, c, id) = setup().await;
    retrieve(&c, &id, "Expedited").await.unwrap();
    emu.set_expedited_shortage(true);
    assert_eq!(
        retrieve(&c, &id, "Expedited").await,
        Err("InsufficientCapacityException".to_string())
    );
    retrieve(&c, &id, "Standard").await.unwrap();
    c.purchase_provisioned_capacity().send().await.unwrap();
    retrieve(&c, &id, "Expedited").await.unwrap();
    let listed = c.list_provisioned_capacity().send().await.unwrap();
    assert_eq!(listed.provisioned_capacity_list().len(), 1);
    // A unit lasts a month; once it has expired the shortage bites again.
    emu.advance(31 * DAY);
    assert_eq!(
        retrieve(&c, &id, "Expedited").await,
        Err("InsufficientCapacityException".to_string())
    );
    emu.set_expedited_shortage(false);
    retrieve(&c, &id, "Expedited").await.unwrap();
    assert_eq!(emu.policy_refusals(), 0);
}
