//! Drives the Glacier emulator through the real aws-sdk-glacier.
mod support;

use support::emulator::*;

#[tokio::test]
async fn smoke() {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    c.create_vault().vault_name("v").send().await.unwrap();
    let d = c.describe_vault().vault_name("v").send().await.unwrap();
    assert_eq!(d.vault_name(), Some("v"));
}
