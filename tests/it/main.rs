//! All integration tests, in one binary: they drive the real `sweep` binary against a
//! temporary PostgreSQL cluster, a throwaway MariaDB server, SQLite files, real files and an
//! in-process S3 server.

mod apply;
mod architecture;
mod attachments;
mod browser;
mod cli;
mod cloudcube;
mod crash;
mod faults;
mod modules;
mod notify;
mod ops;
mod roundtrip;
mod run_api;
mod serve;
mod status;
mod support;
mod worker;

/// Run each scenario on SQLite only (what does not depend on the database: HTTP, TLS, the
/// browser), as its own test.
macro_rules! on_sqlite {
    ($module:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::$module::$name(crate::support::Backend::Sqlite).await
            }
        )*
    };
}

macro_rules! on_postgres {
    ($module:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::$module::$name(crate::support::Backend::Postgres).await
            }
        )*
    };
}

/// Run each scenario on every database (PostgreSQL, SQLite, MariaDB), as its own test.
macro_rules! on_all {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::MySql).await
                }
            )*
        }
    };
}

mod cleanup_attachments {
    on_all!(attachments:
        cutoff_is_inclusive_and_everything_else_survives,
        dry_run_changes_nothing_and_lists_what_the_real_run_deletes,
        a_file_already_gone_is_a_success,
        traversal_values_are_refused_and_their_rows_kept,
        a_real_run_without_migrations_is_refused,
        a_second_concurrent_run_exits_75,
        grace_period_and_protected_prefix_keep_files_and_rows,
        caps_stop_the_run_before_anything_is_deleted,
        s3_store_one_failed_delete_keeps_its_row,
        many_rows_are_paged_and_batched,
        the_json_report_carries_the_spec_fields,
        ctrl_c_stops_between_batches_and_the_audit_stays_consistent,
        restore_brings_back_rows_and_files_byte_for_byte,
        an_undecodable_value_fails_only_its_own_attachment,
        integer_keys_are_paged_in_key_order_and_none_is_skipped,
        candidates_are_planned_in_physical_order_on_postgres_in_key_order_elsewhere,
        rows_reactivated_during_the_run_are_kept,
    );

    mod postgres_only {
        on_postgres!(
            attachments: a_planning_longer_than_the_statement_timeout_completes,
            a_batch_of_attachments_is_two_statements_on_postgres
        );
    }
}

mod plans_and_restore {
    on_all!(apply:
        apply_after_no_change_deletes_exactly_the_plan,
        apply_skips_a_modified_file_and_a_reactivated_or_changed_row,
        apply_skips_a_replaced_object_and_restore_brings_objects_back_from_backup_to,
        restore_brings_objects_back_from_a_backup_dir,
        apply_refuses_another_database_an_old_plan_and_a_forecast,
        apply_keeps_a_tmp_dir_that_gained_a_file_and_caps_still_hold,
        a_failed_backup_to_a_store_keeps_the_item,
    );
}

mod crash_safety {
    on_all!(crash:
        kill_9_at_any_instant_leaves_an_audit_that_matches_once_the_next_run_starts,
        a_crash_at_every_point_of_a_batch_is_settled_by_the_next_run,
        a_crash_around_object_deletion_is_settled_by_the_next_run,
        recover_settles_a_dead_run_on_demand,
        one_item_intents_of_an_older_sweep_are_settled,
    );
}

mod s3_faults {
    on_all!(faults:
        bulk_cloudcube_with_backups_to_s3_absorbs_a_flaky_endpoint,
        attachments_on_s3_absorb_a_flaky_endpoint,
        worker_objects_absorb_a_flaky_endpoint,
    );
}

mod notifications {
    on_all!(notify:
        webhook_and_healthchecks_hear_every_run,
        a_receiver_that_is_down_or_slow_changes_nothing_but_the_record,
    );
}

mod status_and_metrics {
    on_all!(status:
        status_and_metrics_say_when_each_command_last_succeeded,
        status_shows_each_schedule_next_run_and_when_it_is_overdue,
    );
}

mod run_api_events_and_cancel {
    on_all!(run_api:
        a_started_run_reports_planned_items_batches_and_its_end,
        a_cancelled_run_stops_between_batches_and_its_audit_matches,
        a_scheduled_slot_runs_through_the_run_api_and_is_skipped_on_a_held_lock,
    );
}

mod review_apply_restore_every_command {
    on_all!(roundtrip:
        cleanup_attachments_round_trip,
        prune_modules_and_cleanup_ui_files_round_trip,
        cleanup_ops_round_trip,
        bulk_cloudcube_round_trip,
        worker_once_round_trip,
    );
}

mod published_modules {
    on_all!(modules:
        keeps_the_latest_n_per_module_and_files_still_referenced,
        ties_break_on_published_at_then_id,
        module_flag_prunes_one_module_only,
        auto_acts_only_when_enabled,
        grace_keeps_a_fresh_file_and_the_dry_run_matches,
        a_crash_between_rows_and_files_leaves_orphans_that_cleanup_ui_files_removes,
        cleanup_ui_files_keeps_fresh_and_protected_files_and_guards_empty_references,
        an_unreadable_payload_protects_its_module,
        a_refused_file_is_a_reported_failure_and_its_rows_still_go,
        a_ui_file_whose_name_is_not_utf8_is_an_orphan_like_any_other,
    );
}

mod worker_once {
    on_all!(worker:
        a_running_jobs_tmp_dir_survives_and_abandoned_ones_go,
        a_symlink_in_tmp_is_removed_as_a_link_and_its_target_survives,
        an_expired_preview_loses_dir_object_and_references_while_a_ready_one_survives,
        orphaned_objects_older_than_the_ttl_go_and_young_or_referenced_ones_stay,
        old_logs_go_and_kept_patterns_stay,
        stale_repos_go_only_with_the_flag_and_never_active_ones,
        cleanup_disabled_changes_nothing_and_metrics_parse,
        older_logs_are_gzipped_in_place_before_they_are_deleted,
        names_that_are_not_utf8_are_deleted_audited_and_restored_exactly,
        an_unreadable_row_fails_alone_and_the_cycle_goes_on,
    );
}

mod bulk_cloudcube {
    on_all!(cloudcube:
        keeps_recent_completed_clips_and_in_progress_media_and_deletes_the_rest,
        the_dry_run_lists_exactly_what_the_real_run_deletes,
        job_cleanup_waits_for_every_clip,
        thousands_of_objects_are_paged_batched_and_one_failure_is_reported,
        nothing_preserved_is_refused_unless_allowed_and_bad_urls_are_clear,
    );
}

mod cleanup_ops {
    on_all!(ops:
        each_policy_keeps_its_boundary_and_backs_up_what_it_deletes,
        emergency_skips_backups_and_manual_needs_a_terminal_or_yes,
        set_policy_round_trip_disables_and_is_audited,
        stats_show_history_and_what_is_eligible,
        db_flags_stand_in_for_database_url_and_hide_the_password,
        a_backup_dir_outside_ops_dir_is_pruned_too,
    );
}

mod web {
    on_all!(serve:
        auth_roles_and_bad_input_get_clear_answers,
        seed_003_bulk_answers_its_fields_and_deletes_like_the_cli,
        a_web_run_and_a_cli_run_share_one_lock,
        cancel_mid_run_ends_partial_with_a_consistent_audit,
        review_then_apply_refuses_a_tampered_or_stale_plan,
        runs_items_filters_csv_and_events,
        policies_toggle_and_every_web_action_are_audited_with_the_token_name,
        schedules_show_next_run_and_catch_up_once_across_servers,
        graceful_shutdown_lets_the_batch_finish_and_records_the_run,
        seed_002_stats_files_and_run_answer_like_cleanup_ops,
        web_runs_notify_like_cli_runs_even_when_they_cannot_start,
    );

    mod sqlite_only {
        on_sqlite!(serve:
            openapi_matches_the_routes,
            browser_sessions_need_csrf_and_the_same_origin,
            tls_serves_https_and_a_remote_address_needs_it,
            rate_limits_answer_429_with_retry_after,
            live_events_stream_a_run_to_its_end,
        );
        on_sqlite!(browser: sign_in_preview_review_apply_watch_and_edit);
    }
}
