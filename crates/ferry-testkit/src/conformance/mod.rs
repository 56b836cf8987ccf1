//! Conformance suites: the documented contracts of [`Sink`](ferry_core::Sink) /
//! [`Upload`](ferry_core::Upload) and of [`StateStore`](ferry_core::StateStore), as test
//! functions that run unchanged against every backend, in memory and real.
//!
//! Each case is a `pub async fn` taking a fresh fixture. A test binary runs every case against
//! one backend with the macros, one `#[tokio::test]` per case:
//!
//! ```ignore
//! mod sftp {
//!     ferry_testkit::sink_conformance!(crate::sftp());
//! }
//! mod metadata {
//!     ferry_testkit::state_conformance!(crate::metadata());
//! }
//! ```
//!
//! The argument is an expression evaluating to a future of the fixture
//! ([`SinkFixture`](sink::SinkFixture), or any [`StateBackend`](state::StateBackend)); it is
//! evaluated once per case, so every case starts from an empty directory or table.

pub mod sink;
pub mod state;

/// One `#[tokio::test]` per case of the Sink/Upload suite, against the fixture that
/// `$fixture.await` gives.
#[macro_export]
macro_rules! sink_conformance {
    ($fixture:expr) => {
        $crate::__conformance_cases!(sink, $fixture;
            commit_publishes_exactly_the_bytes_written,
            nothing_is_visible_under_the_final_name_before_commit,
            abort_removes_the_temporary_file,
            a_failed_seal_removes_the_temporary_file,
            create_refuses_an_existing_name_and_keeps_the_old_file,
            overwrite_replaces_an_existing_file,
            names_that_are_not_bare_are_refused,
            an_empty_file_can_be_delivered,
            a_large_file_in_many_chunks_arrives_intact,
            uploads_in_flight_at_once_do_not_mix,
            racing_creates_of_one_name_publish_exactly_one,
            a_failed_commit_leaves_the_temporary_file_for_a_later_publish,
            publish_finishes_a_sealed_upload_that_was_dropped,
            publish_under_create_onto_a_taken_name_is_not_published,
            publishing_a_missing_temporary_file_is_not_published,
            dropping_an_upload_removes_its_temporary_file_only_before_seal,
            leftovers_lists_exactly_the_temporary_files,
            remove_deletes_a_file_and_succeeds_when_it_is_absent,
        );
    };
}

/// One `#[tokio::test]` per case of the StateStore suite, against the backend that
/// `$backend.await` gives.
#[macro_export]
macro_rules! state_conformance {
    ($backend:expr) => {
        $crate::__conformance_cases!(state, $backend;
            ensure_is_idempotent_and_keeps_records,
            a_record_reads_back_as_appended,
            the_watermark_is_the_latest_success,
            the_null_arrival_mark_is_the_largest_success_bound,
            pending_lists_the_runs_not_settled,
            by_message_finds_the_records_of_one_message,
            history_is_newest_first_and_limited,
            a_record_appended_later_is_later_whatever_its_completed_at,
            lease_shows_the_holder_and_whether_it_is_live,
            a_live_lease_released_for_its_holder_is_free_and_the_holder_learns_it,
            acquiring_a_lease_one_holds_answers_held_by_oneself,
            a_free_lease_is_acquired_and_a_held_one_is_refused,
            acquire_waits_for_a_release,
            release_frees_the_lease_and_a_non_holder_release_does_nothing,
            renew_is_true_only_for_the_live_holder,
            an_expired_lease_is_free,
            a_lease_lasts_its_ttl_from_the_last_renewal,
            one_holder_at_a_time_among_contenders,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($suite:ident, $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                $crate::conformance::$suite::$case($fixture.await).await;
            }
        )*
    };
}
