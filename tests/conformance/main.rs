//! The role conformance suites (`ferry_testkit::conformance`) against the real backends on the
//! local stack: `SftpSink` on OpenSSH sshd, publishing with `posix-rename@openssh.com` and
//! through the fallback without it, each test in a directory of its own; `MetadataStore` on the
//! BigQuery emulator, each test in a dataset of its own. The same suites run against the
//! in-memory backends in `ferry-testkit`'s unit tests.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ferry_bigquery::{MetadataStore, QueryParam};
use ferry_core::ident::TableName;
use ferry_core::StateStore;
use ferry_sftp::{Auth, HostKeyPolicy, SftpSettings, SftpSink};
use ferry_testkit::conformance::sink::SinkFixture;
use ferry_testkit::conformance::state::StateBackend;
use ferry_testkit::{stack, TestDataset, TestDir};

/// An `SftpSink` (key auth, known_hosts) on a fresh directory of the SFTP server.
async fn sftp(posix_rename: bool) -> SinkFixture {
    let dir = TestDir::create("conform_sftp");
    let s = stack();
    let settings = SftpSettings {
        host: s.var("FERRY_SFTP_HOST"),
        port: s.var("FERRY_SFTP_PORT").parse().expect("FERRY_SFTP_PORT"),
        username: s.var("FERRY_SFTP_KEY_USER"),
        auth: Auth::PrivateKey { path: PathBuf::from(s.var("FERRY_SFTP_KEY_FILE")), passphrase: None },
        host_key: HostKeyPolicy::KnownHosts(PathBuf::from(s.var("FERRY_SFTP_KNOWN_HOSTS"))),
        directory: dir.remote(),
        timeout: Duration::from_secs(30),
    };
    let sink = SftpSink::connect(settings).await.unwrap_or_else(|e| panic!("connecting to the stack's SFTP server: {e}"));
    assert!(sink.offers_posix_rename(), "OpenSSH offers posix-rename@openssh.com");
    let sink = if posix_rename { sink } else { sink.without_posix_rename() };
    SinkFixture { sink: Box::new(sink), dir: Box::new(dir) }
}

mod sftp {
    ferry_testkit::sink_conformance!(crate::sftp(true));
}

mod sftp_without_posix_rename {
    ferry_testkit::sink_conformance!(crate::sftp(false));
}

/// Two `MetadataStore`s on one fresh, ensured table in a dataset of its own.
struct Metadata {
    ds: TestDataset,
    store: MetadataStore,
    other: MetadataStore,
}

async fn metadata() -> Metadata {
    let ds = TestDataset::create("conform_state").await;
    let table = TableName::parse(&format!("{}.export_metadata", ds.name)).expect("table name");
    let store = MetadataStore::new(stack().bigquery(), &table);
    store.ensure().await.unwrap_or_else(|e| panic!("creating the metadata table in the BigQuery emulator: {e}"));
    let other = MetadataStore::new(stack().bigquery(), &table);
    Metadata { ds, store, other }
}

#[async_trait]
impl StateBackend for Metadata {
    fn store(&self) -> &dyn StateStore {
        &self.store
    }

    fn other(&self) -> &dyn StateStore {
        &self.other
    }

    /// Moves the claim's expiry into the past in the leases table, rather than wait for a TTL.
    async fn expire(&self, export: &str, holder: &str) {
        let sql = format!(
            "UPDATE `{}` SET expires_at = TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 SECOND) \
             WHERE export_name = @export AND holder = @holder",
            self.ds.table("export_metadata_leases")
        );
        let params = [QueryParam::new("export", "STRING", export), QueryParam::new("holder", "STRING", holder)];
        let changed = self.ds.bq.execute(&sql, &params).await.unwrap_or_else(|e| panic!("{sql}\n-> {e}"));
        assert!(changed.unwrap_or(0) > 0, "{holder} has a claim on {export} to expire");
    }

    /// Lease times are the server's clock: let real time pass.
    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

mod metadata {
    ferry_testkit::state_conformance!(crate::metadata());
}
