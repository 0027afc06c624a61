//! Given/when/then tests of every decision and every refusal.
//!
//! State comes from folding real events (encoded, decoded and folded as the projection does),
//! never from a hand-built `TokenRow`, so these tests break if the fold and the decisions drift
//! apart. Time is always a fixed `NOW`.

use super::*;

use tokenledger_events::{Hash, StoredEvent, StreamId, TokenEvent, codec};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// 2026-01-01T00:00:00Z.
const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);
const OLD: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const SUCCESSOR: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const EARLIER_SUCCESSOR: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);
const ADMIN: &str = "alice@example.com";
const KNOWN: &str = "admin, console:exec, logs:read, registry:read, registry:write, tokens:verify, tokens:rotate-self, leaks:report";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn minutes(n: u64) -> Duration {
    secs(60 * n)
}

fn hours(n: u64) -> Duration {
    secs(3600 * n)
}

fn days(n: u64) -> Duration {
    secs(86_400 * n)
}

fn commitment() -> Commitment {
    Commitment([7; 32])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// An event as the log would hold it: real canonical bytes, so folding decodes it.
fn stored(
    token_id: Uuid,
    version: u64,
    at: Timestamp,
    actor: &str,
    event: &TokenEvent,
) -> StoredEvent {
    let stream_id = StreamId::for_token(token_id);
    let event_id = Uuid::from_u128(token_id.as_u128() ^ (u128::from(version) << 64));
    StoredEvent {
        position: version,
        bytes: codec::encode(event_id, &stream_id, version, at, actor, event),
        stream_id,
        stream_version: version,
        event_id,
        recorded_at: at,
        actor: actor.to_owned(),
        event_type: event.event_type().to_owned(),
        schema_version: TokenEvent::CURRENT_SCHEMA,
        hash: Hash::ZERO,
        openings: Vec::new(),
    }
}

/// One token's stream, built event by event.
struct Given {
    id: Uuid,
    events: Vec<StoredEvent>,
}

impl Given {
    fn then(mut self, at: Timestamp, event: TokenEvent) -> Given {
        let version = self.events.len() as u64 + 1;
        self.events
            .push(stored(self.id, version, at, ADMIN, &event));
        self
    }

    fn then_revoked(self, at: Timestamp) -> Given {
        self.then(
            at,
            TokenEvent::Revoked(TokenRevoked {
                actor: ADMIN.into(),
                reason: Some("leaked".into()),
            }),
        )
    }

    fn then_rotated(self, at: Timestamp, successor: Uuid, old_expires_at: Timestamp) -> Given {
        self.then(
            at,
            TokenEvent::Rotated(TokenRotated {
                successor_id: successor,
                old_expires_at,
                until_successor_used: false,
            }),
        )
    }

    /// Fold the stream the way the token projection does.
    fn row(&self) -> TokenRow {
        let (first, rest) = self
            .events
            .split_first()
            .expect("a stream starts with its create");
        let TokenEvent::Created(created) = first.decode().expect("create decodes") else {
            panic!("a stream starts with TokenCreated");
        };
        let mut row = TokenRow::created(first, &created);
        for event in rest {
            row.apply(event, &event.decode().expect("event decodes"));
        }
        row
    }

    /// Fold the stream the way the token cache does; it must agree with [`Given::row`].
    fn entry(&self) -> TokenEntry {
        let (first, rest) = self
            .events
            .split_first()
            .expect("a stream starts with its create");
        let TokenEvent::Created(created) = first.decode().expect("create decodes") else {
            panic!("a stream starts with TokenCreated");
        };
        let mut entry = TokenEntry::created(first, &created);
        for event in rest {
            entry.apply(event, &event.decode().expect("event decodes"));
        }
        assert_eq!(
            entry,
            TokenEntry::of(&self.row()),
            "the entry folds as the row does"
        );
        entry
    }
}

/// A token `OLD` named "ci-deploy", created ten days before `NOW`.
fn given_token(environment: Environment, scopes: &[&str], expires_at: Timestamp) -> Given {
    let created = TokenCreated {
        token_id: OLD,
        name: "ci-deploy".into(),
        scopes: strings(scopes),
        environment,
        expires_at,
        created_by: ADMIN.into(),
        secret_commitment: commitment(),
        rotated_from: None,
        allowed_ips: Vec::new(),
    };
    Given {
        id: OLD,
        events: Vec::new(),
    }
    .then(NOW.minus(days(10)), TokenEvent::Created(created))
}

/// A test-environment console token that expires 80 days after `NOW`.
fn given_active() -> Given {
    given_token(Environment::Test, &["console:exec"], NOW.plus(days(80)))
}

/// An active token revoked an hour before `NOW`.
fn given_revoked() -> Given {
    given_active().then_revoked(NOW.minus(hours(1)))
}

/// An active token rotated an hour before `NOW` with a 24h grace: it works until `NOW + 23h`.
fn given_rotated() -> Given {
    given_active().then_rotated(NOW.minus(hours(1)), EARLIER_SUCCESSOR, NOW.plus(hours(23)))
}

fn create(name: &str, scopes: &[&str]) -> CreateToken {
    CreateToken {
        name: name.into(),
        scopes: strings(scopes),
        expires_in: None,
        environment: Environment::Test,
        actor: ADMIN.into(),
        allowed_ips: Vec::new(),
    }
}

fn when_create(cmd: &CreateToken) -> Result<TokenCreated, DomainError> {
    decide_create(cmd, SUCCESSOR, commitment(), NOW, &Policy::default())
}

/// The console asking for `console:exec` or `admin` on a test server.
fn console_use() -> UseAttempt {
    UseAttempt {
        required_any: vec![Scope::ConsoleExec, Scope::Admin],
        server_environment: Environment::Test,
        ip: Some("203.0.113.7".into()),
        method: "POST".into(),
        path: "/api/admin/console".into(),
        command: Some("status".into()),
        user_agent: Some("deploy-bot/1.2".into()),
    }
}

fn denied(reason: DenyReason) -> UseDecision {
    UseDecision::Denied(TokenUseDenied {
        reason,
        ip: Some("203.0.113.7".into()),
        path: "/api/admin/console".into(),
    })
}

fn allowed() -> UseDecision {
    UseDecision::Allowed(TokenUsed {
        ip: Some("203.0.113.7".into()),
        method: "POST".into(),
        path: "/api/admin/console".into(),
        command: Some("status".into()),
        user_agent: Some("deploy-bot/1.2".into()),
    })
}

fn rotate() -> RotateToken {
    RotateToken {
        actor: "bob@example.com".into(),
        ..RotateToken::default()
    }
}

fn when_rotate(given: &Given, cmd: &RotateToken) -> Result<Rotation, DomainError> {
    decide_rotate(
        &given.row(),
        cmd,
        SUCCESSOR,
        commitment(),
        NOW,
        &Policy::default(),
    )
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

#[test]
fn default_policy_is_90_day_expiry_365_day_maximum_and_24_hour_grace() {
    assert_eq!(
        Policy::default(),
        Policy {
            default_ttl: days(90),
            max_ttl: days(365),
            default_grace: hours(24),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Create: name
// ---------------------------------------------------------------------------------------------

#[test]
fn create_trims_the_name() {
    let created = when_create(&create("  ci-deploy \t", &["admin"])).expect("accepted");
    assert_eq!(created.name, "ci-deploy");
}

#[test]
fn create_accepts_a_name_of_exactly_100_characters() {
    let name = "n".repeat(100);
    let created = when_create(&create(&name, &["admin"])).expect("accepted");
    assert_eq!(created.name, name);
}

#[test]
fn create_counts_name_length_in_characters_not_bytes() {
    // 100 characters, 200 bytes.
    let name = "é".repeat(100);
    let created = when_create(&create(&name, &["admin"])).expect("accepted");
    assert_eq!(created.name, name);
}

#[test]
fn create_counts_name_length_after_trimming() {
    let name = format!("  {}  ", "n".repeat(100));
    let created = when_create(&create(&name, &["admin"])).expect("accepted");
    assert_eq!(created.name, "n".repeat(100));
}

#[test]
fn create_refuses_a_name_of_101_characters_and_says_how_long_it_was() {
    let err = when_create(&create(&"n".repeat(101), &["admin"])).expect_err("refused");
    assert_eq!(err, DomainError::BadName(101));
    assert_eq!(err.to_string(), "name must be 1 to 100 characters, got 101");
}

#[test]
fn create_refuses_an_empty_name() {
    let err = when_create(&create("", &["admin"])).expect_err("refused");
    assert_eq!(err, DomainError::BadName(0));
    assert_eq!(err.to_string(), "name must be 1 to 100 characters, got 0");
}

#[test]
fn create_refuses_a_whitespace_only_name() {
    let err = when_create(&create(" \t\n ", &["admin"])).expect_err("refused");
    assert_eq!(err, DomainError::BadName(0));
}

#[test]
fn create_refuses_a_name_with_a_control_character_inside() {
    // Trimming only removes the ends; a control character inside a name is refused, saying so.
    for name in [
        "ci\u{7}deploy",
        "ci\ndeploy",
        "ci\u{1b}[31mdeploy",
        "ci\u{9b}deploy",
        "ci\u{7f}deploy",
        "ci\u{202e}yolped",
        "ci\u{200b}deploy",
        "ci\u{2066}deploy",
    ] {
        let err = when_create(&create(name, &["admin"])).expect_err("refused");
        assert_eq!(err, DomainError::NameHasControl);
        assert!(
            err.to_string().contains("control or invisible characters"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Create: scopes
// ---------------------------------------------------------------------------------------------

#[test]
fn create_refuses_no_scopes_and_lists_the_known_ones() {
    let err = when_create(&create("ci-deploy", &[])).expect_err("refused");
    assert_eq!(err, DomainError::NoScopes);
    assert_eq!(
        err.to_string(),
        format!("at least one scope is required; known scopes: {KNOWN}")
    );
}

#[test]
fn create_refuses_an_unknown_scope_and_lists_the_known_ones() {
    let err = when_create(&create("ci-deploy", &["logs:read", "logs:write"])).expect_err("refused");
    assert_eq!(
        err,
        DomainError::UnknownScope("logs:write".parse::<Scope>().unwrap_err())
    );
    assert_eq!(
        err.to_string(),
        format!("unknown scope \"logs:write\"; known scopes: {KNOWN}")
    );
}

#[test]
fn scopes_match_exactly_without_case_folding_or_trimming() {
    for raw in ["Admin", " admin", "admin ", "console", ""] {
        assert_eq!(
            parse_scope(raw),
            Err(DomainError::UnknownScope(raw.parse::<Scope>().unwrap_err())),
            "{raw:?}"
        );
    }
}

#[test]
fn every_known_scope_parses_to_itself() {
    for scope in Scope::ALL {
        assert_eq!(parse_scope(scope.as_str()), Ok(scope));
    }
}

#[test]
fn create_collapses_duplicate_scopes_and_stores_them_in_canonical_order() {
    let created = when_create(&create(
        "ci-deploy",
        &[
            "tokens:verify",
            "admin",
            "logs:read",
            "admin",
            "tokens:verify",
        ],
    ))
    .expect("accepted");
    assert_eq!(
        created.scopes,
        strings(&["admin", "logs:read", "tokens:verify"])
    );
}

#[test]
fn create_refuses_an_unknown_scope_even_among_known_ones() {
    let err = when_create(&create("ci-deploy", &["admin", "admin", "root"])).expect_err("refused");
    assert_eq!(
        err,
        DomainError::UnknownScope("root".parse::<Scope>().unwrap_err())
    );
}

// ---------------------------------------------------------------------------------------------
// Create: expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn create_without_an_expiry_expires_90_days_from_now() {
    let created = when_create(&create("ci-deploy", &["admin"])).expect("accepted");
    assert_eq!(created.expires_at, NOW.plus(days(90)));
    assert_eq!(
        created.expires_at,
        Timestamp::parse_rfc3339("2026-04-01T00:00:00Z").expect("a time")
    );
}

#[test]
fn create_with_an_explicit_expiry_expires_that_long_from_now() {
    let cmd = CreateToken {
        expires_in: Some(minutes(15)),
        ..create("ci-deploy", &["admin"])
    };
    assert_eq!(
        when_create(&cmd).expect("accepted").expires_at,
        NOW.plus(minutes(15))
    );
}

#[test]
fn create_refuses_a_zero_expiry_and_shows_the_accepted_form() {
    let cmd = CreateToken {
        expires_in: Some(Duration::ZERO),
        ..create("ci-deploy", &["admin"])
    };
    let err = when_create(&cmd).expect_err("refused");
    assert_eq!(err, DomainError::NonPositiveExpiry);
    assert_eq!(
        err.to_string(),
        "expiry must be positive, like 90s, 15m, 24h or 30d"
    );
}

#[test]
fn create_refuses_an_expiry_above_the_maximum_naming_both_durations() {
    let cmd = CreateToken {
        expires_in: Some(days(400)),
        ..create("ci-deploy", &["admin"])
    };
    let err = when_create(&cmd).expect_err("refused");
    assert_eq!(
        err,
        DomainError::ExpiryTooLong {
            requested: "400d".into(),
            max: "365d".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "expiry of 400d exceeds the maximum of 365d (API_TOKEN_MAX_TTL)"
    );
}

#[test]
fn create_refuses_an_expiry_one_second_above_the_maximum() {
    let cmd = CreateToken {
        expires_in: Some(days(365) + secs(1)),
        ..create("ci-deploy", &["admin"])
    };
    assert_eq!(
        when_create(&cmd).expect_err("refused"),
        DomainError::ExpiryTooLong {
            requested: "31536001s".into(),
            max: "365d".into(),
        }
    );
}

#[test]
fn create_accepts_an_expiry_of_exactly_the_maximum() {
    let cmd = CreateToken {
        expires_in: Some(days(365)),
        ..create("ci-deploy", &["admin"])
    };
    assert_eq!(
        when_create(&cmd).expect("accepted").expires_at,
        NOW.plus(days(365))
    );
}

#[test]
fn create_follows_the_configured_policy() {
    let policy = Policy {
        default_ttl: days(30),
        max_ttl: days(60),
        default_grace: hours(1),
    };
    let decide = |cmd: &CreateToken| decide_create(cmd, SUCCESSOR, commitment(), NOW, &policy);

    let created = decide(&create("ci-deploy", &["admin"])).expect("accepted");
    assert_eq!(created.expires_at, NOW.plus(days(30)));

    let too_long = CreateToken {
        expires_in: Some(days(61)),
        ..create("ci-deploy", &["admin"])
    };
    assert_eq!(
        decide(&too_long).expect_err("refused"),
        DomainError::ExpiryTooLong {
            requested: "61d".into(),
            max: "60d".into(),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Create: the event
// ---------------------------------------------------------------------------------------------

#[test]
fn create_records_id_commitment_actor_and_environment_and_no_predecessor() {
    let cmd = CreateToken {
        environment: Environment::Live,
        ..create("ci-deploy", &["registry:write", "registry:read"])
    };
    assert_eq!(
        when_create(&cmd).expect("accepted"),
        TokenCreated {
            token_id: SUCCESSOR,
            name: "ci-deploy".into(),
            scopes: strings(&["registry:read", "registry:write"]),
            environment: Environment::Live,
            expires_at: NOW.plus(days(90)),
            created_by: ADMIN.into(),
            secret_commitment: commitment(),
            rotated_from: None,
            allowed_ips: Vec::new(),
        }
    );
}

#[test]
fn create_reports_the_name_first_when_several_things_are_wrong() {
    let cmd = CreateToken {
        expires_in: Some(Duration::ZERO),
        ..create("", &["root"])
    };
    assert_eq!(
        when_create(&cmd).expect_err("refused"),
        DomainError::BadName(0)
    );
}

// ---------------------------------------------------------------------------------------------
// Use: allowed
// ---------------------------------------------------------------------------------------------

#[test]
fn use_of_an_active_token_with_the_scope_is_allowed_and_carries_the_request() {
    assert_eq!(
        decide_use(&given_active().entry(), &console_use(), NOW),
        allowed()
    );
}

#[test]
fn use_without_ip_command_or_user_agent_records_them_as_absent() {
    let attempt = UseAttempt {
        ip: None,
        command: None,
        user_agent: None,
        method: "GET".into(),
        path: "/v1/verify".into(),
        ..console_use()
    };
    assert_eq!(
        decide_use(&given_active().entry(), &attempt, NOW),
        UseDecision::Allowed(TokenUsed {
            ip: None,
            method: "GET".into(),
            path: "/v1/verify".into(),
            command: None,
            user_agent: None,
        })
    );
}

#[test]
fn use_is_allowed_when_the_token_holds_any_one_of_the_required_scopes() {
    let given = given_token(Environment::Test, &["admin"], NOW.plus(days(80)));
    assert_eq!(decide_use(&given.entry(), &console_use(), NOW), allowed());
}

#[test]
fn use_with_no_required_scope_is_allowed_for_any_scope() {
    let given = given_token(Environment::Test, &["logs:read"], NOW.plus(days(80)));
    let attempt = UseAttempt {
        required_any: Vec::new(),
        ..console_use()
    };
    assert!(matches!(
        decide_use(&given.entry(), &attempt, NOW),
        UseDecision::Allowed(_)
    ));
}

#[test]
fn use_of_a_token_in_its_rotation_grace_period_is_allowed() {
    let row = given_rotated().row();
    assert_eq!(row.status_at(NOW), TokenStatus::RotatedInGrace);
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), NOW),
        allowed()
    );
}

#[test]
fn use_one_microsecond_before_expiry_is_allowed() {
    let expires_at = NOW.plus(hours(1));
    let row = given_token(Environment::Test, &["console:exec"], expires_at).row();
    assert_eq!(
        decide_use(
            &TokenEntry::of(&row),
            &console_use(),
            expires_at.plus_micros(-1)
        ),
        allowed()
    );
}

// ---------------------------------------------------------------------------------------------
// Use: each denial
// ---------------------------------------------------------------------------------------------

#[test]
fn use_of_a_token_from_the_other_environment_is_denied() {
    let given = given_token(Environment::Live, &["console:exec"], NOW.plus(days(80)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::EnvironmentMismatch)
    );
}

#[test]
fn use_of_a_revoked_token_is_denied() {
    assert_eq!(
        decide_use(&given_revoked().entry(), &console_use(), NOW),
        denied(DenyReason::Revoked)
    );
}

#[test]
fn use_of_an_expired_token_is_denied() {
    let given = given_token(Environment::Test, &["console:exec"], NOW.minus(days(1)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::Expired)
    );
}

#[test]
fn use_at_the_exact_expiry_instant_is_denied_as_expired() {
    // A token is expired at its `expires_at` instant, not only after it.
    let expires_at = NOW.plus(hours(1));
    let row = given_token(Environment::Test, &["console:exec"], expires_at).row();
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), expires_at),
        denied(DenyReason::Expired)
    );
    assert_eq!(
        decide_use(
            &TokenEntry::of(&row),
            &console_use(),
            expires_at.plus_micros(1)
        ),
        denied(DenyReason::Expired)
    );
}

#[test]
fn use_without_any_required_scope_is_denied_as_insufficient_scope() {
    let given = given_token(
        Environment::Test,
        &["logs:read", "registry:read"],
        NOW.plus(days(80)),
    );
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::InsufficientScope)
    );
}

#[test]
fn use_denial_without_a_known_ip_records_no_ip() {
    let attempt = UseAttempt {
        ip: None,
        ..console_use()
    };
    assert_eq!(
        decide_use(&given_revoked().entry(), &attempt, NOW),
        UseDecision::Denied(TokenUseDenied {
            reason: DenyReason::Revoked,
            ip: None,
            path: "/api/admin/console".into(),
        })
    );
}

#[test]
fn use_after_the_rotation_grace_period_ends_is_denied_as_expired() {
    let row = given_rotated().row();
    let grace_end = NOW.plus(hours(23));
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), grace_end),
        denied(DenyReason::Expired)
    );
    assert_eq!(
        decide_use(
            &TokenEntry::of(&row),
            &console_use(),
            grace_end.plus(secs(1))
        ),
        denied(DenyReason::Expired)
    );
}

// ---------------------------------------------------------------------------------------------
// Use: order of checks when several apply (environment, revoked, expired, scope)
// ---------------------------------------------------------------------------------------------

#[test]
fn use_of_a_revoked_and_expired_token_is_denied_as_revoked() {
    let given = given_token(Environment::Test, &["console:exec"], NOW.minus(days(1)))
        .then_revoked(NOW.minus(days(2)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::Revoked)
    );
}

#[test]
fn use_of_a_revoked_token_from_the_other_environment_is_denied_as_environment_mismatch() {
    let given = given_token(Environment::Live, &["console:exec"], NOW.plus(days(80)))
        .then_revoked(NOW.minus(hours(1)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::EnvironmentMismatch)
    );
}

#[test]
fn use_of_an_expired_token_from_the_other_environment_is_denied_as_environment_mismatch() {
    let given = given_token(Environment::Live, &["console:exec"], NOW.minus(days(1)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::EnvironmentMismatch)
    );
}

#[test]
fn use_of_a_revoked_token_lacking_the_scope_is_denied_as_revoked() {
    let given = given_token(Environment::Test, &["logs:read"], NOW.plus(days(80)))
        .then_revoked(NOW.minus(hours(1)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::Revoked)
    );
}

#[test]
fn use_of_an_expired_token_lacking_the_scope_is_denied_as_expired() {
    let given = given_token(Environment::Test, &["logs:read"], NOW.minus(days(1)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::Expired)
    );
}

#[test]
fn use_of_a_token_lacking_the_scope_from_the_other_environment_is_denied_as_environment_mismatch() {
    let given = given_token(Environment::Live, &["logs:read"], NOW.plus(days(80)));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::EnvironmentMismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// Revoke
// ---------------------------------------------------------------------------------------------

#[test]
fn revoke_of_an_active_token_records_the_actor_and_reason() {
    assert_eq!(
        decide_revoke(
            &given_active().entry(),
            "bob@example.com",
            Some("leaked in CI log".into())
        ),
        Ok(TokenRevoked {
            actor: "bob@example.com".into(),
            reason: Some("leaked in CI log".into()),
        })
    );
}

#[test]
fn revoke_without_a_reason_records_none() {
    assert_eq!(
        decide_revoke(&given_active().entry(), "bob@example.com", None),
        Ok(TokenRevoked {
            actor: "bob@example.com".into(),
            reason: None,
        })
    );
}

#[test]
fn a_revoke_reason_is_at_most_500_plain_characters() {
    let row = given_active().row();
    let long = "x".repeat(MAX_REASON_CHARS + 1);
    assert_eq!(
        decide_revoke(&TokenEntry::of(&row), "bob", Some(long)),
        Err(DomainError::ReasonTooLong(MAX_REASON_CHARS + 1))
    );
    for forged in [
        "left\nAPI_TOKEN_REVOKED",
        "a\u{1b}[8m",
        "a\u{202e}b",
        "a\u{200b}",
    ] {
        let err =
            decide_revoke(&TokenEntry::of(&row), "bob", Some(forged.into())).expect_err(forged);
        assert_eq!(err, DomainError::ReasonHasControl);
        assert!(err.to_string().contains("control or invisible characters"));
    }
    let exact = "y".repeat(MAX_REASON_CHARS);
    assert!(decide_revoke(&TokenEntry::of(&row), "bob", Some(exact)).is_ok());
    assert_eq!(
        decide_revoke(&TokenEntry::of(&row), "bob", Some("   ".into())).map(|r| r.reason),
        Ok(None),
        "a blank reason is none"
    );
}

#[test]
fn revoke_of_a_revoked_token_is_refused_naming_the_token() {
    let err =
        decide_revoke(&given_revoked().entry(), "bob@example.com", None).expect_err("refused");
    assert_eq!(err, DomainError::AlreadyRevoked(OLD));
    assert_eq!(err.to_string(), format!("token {OLD} is already revoked"));
}

#[test]
fn revoke_of_an_expired_token_is_allowed() {
    let row = given_token(Environment::Test, &["console:exec"], NOW.minus(days(1))).row();
    assert_eq!(row.status_at(NOW), TokenStatus::Expired);
    assert_eq!(
        decide_revoke(&TokenEntry::of(&row), "bob@example.com", None),
        Ok(TokenRevoked {
            actor: "bob@example.com".into(),
            reason: None,
        })
    );
}

#[test]
fn revoke_of_a_token_in_its_rotation_grace_period_is_allowed() {
    let row = given_rotated().row();
    assert_eq!(row.status_at(NOW), TokenStatus::RotatedInGrace);
    assert_eq!(
        decide_revoke(
            &TokenEntry::of(&row),
            "bob@example.com",
            Some("end grace early".into())
        ),
        Ok(TokenRevoked {
            actor: "bob@example.com".into(),
            reason: Some("end grace early".into()),
        })
    );
}

#[test]
fn revoke_folded_into_the_stream_denies_the_next_use() {
    let given = given_active();
    let revoked = decide_revoke(&given.entry(), ADMIN, None).expect("accepted");
    let given = given.then(NOW, TokenEvent::Revoked(revoked));
    assert_eq!(
        decide_use(&given.entry(), &console_use(), NOW),
        denied(DenyReason::Revoked)
    );
}

// ---------------------------------------------------------------------------------------------
// Rotate: the successor
// ---------------------------------------------------------------------------------------------

#[test]
fn rotate_keeps_the_name_and_scopes_of_the_old_token_by_default() {
    let given = given_token(
        Environment::Test,
        &["console:exec", "logs:read"],
        NOW.plus(days(80)),
    );
    let rotation = when_rotate(&given, &rotate()).expect("accepted");
    assert_eq!(
        rotation.created,
        TokenCreated {
            token_id: SUCCESSOR,
            name: "ci-deploy".into(),
            scopes: strings(&["console:exec", "logs:read"]),
            environment: Environment::Test,
            expires_at: NOW.plus(days(90)),
            created_by: "bob@example.com".into(),
            secret_commitment: commitment(),
            rotated_from: Some(OLD),
            allowed_ips: Vec::new(),
        }
    );
}

#[test]
fn rotate_without_an_expiry_gives_the_successor_the_policy_default_not_the_old_lifetime() {
    // The old token has 2 days left of a shorter lifetime; the successor still gets 90 days.
    let given = given_token(Environment::Test, &["console:exec"], NOW.plus(days(2)));
    let rotation = when_rotate(&given, &rotate()).expect("accepted");
    assert_eq!(rotation.created.expires_at, NOW.plus(days(90)));
}

#[test]
fn rotate_applies_name_scopes_and_expiry_overrides() {
    let cmd = RotateToken {
        name: Some("  ci-deploy-2026 ".into()),
        scopes: Some(strings(&["tokens:verify", "admin", "admin"])),
        expires_in: Some(days(30)),
        ..rotate()
    };
    let created = when_rotate(&given_active(), &cmd)
        .expect("accepted")
        .created;
    assert_eq!(created.name, "ci-deploy-2026");
    assert_eq!(created.scopes, strings(&["admin", "tokens:verify"]));
    assert_eq!(created.expires_at, NOW.plus(days(30)));
    assert_eq!(created.rotated_from, Some(OLD));
}

#[test]
fn rotate_refuses_an_unknown_scope_in_the_override() {
    let cmd = RotateToken {
        scopes: Some(strings(&["console:exec", "console:root"])),
        ..rotate()
    };
    let err = when_rotate(&given_active(), &cmd).expect_err("refused");
    assert_eq!(
        err,
        DomainError::UnknownScope("console:root".parse::<Scope>().unwrap_err())
    );
    assert_eq!(
        err.to_string(),
        format!("unknown scope \"console:root\"; known scopes: {KNOWN}")
    );
}

#[test]
fn rotate_refuses_an_empty_scope_override() {
    let cmd = RotateToken {
        scopes: Some(Vec::new()),
        ..rotate()
    };
    assert_eq!(
        when_rotate(&given_active(), &cmd),
        Err(DomainError::NoScopes)
    );
}

#[test]
fn rotate_refuses_a_blank_name_override() {
    let cmd = RotateToken {
        name: Some("   ".into()),
        ..rotate()
    };
    assert_eq!(
        when_rotate(&given_active(), &cmd),
        Err(DomainError::BadName(0))
    );
}

#[test]
fn rotate_refuses_an_expiry_override_above_the_maximum() {
    let cmd = RotateToken {
        expires_in: Some(days(400)),
        ..rotate()
    };
    assert_eq!(
        when_rotate(&given_active(), &cmd),
        Err(DomainError::ExpiryTooLong {
            requested: "400d".into(),
            max: "365d".into(),
        })
    );
}

#[test]
fn rotate_refuses_a_zero_expiry_override() {
    let cmd = RotateToken {
        expires_in: Some(Duration::ZERO),
        ..rotate()
    };
    assert_eq!(
        when_rotate(&given_active(), &cmd),
        Err(DomainError::NonPositiveExpiry)
    );
}

#[test]
fn rotate_keeps_the_environment_of_the_old_token() {
    let given = given_token(Environment::Live, &["console:exec"], NOW.plus(days(80)));
    let rotation = when_rotate(&given, &rotate()).expect("accepted");
    assert_eq!(rotation.created.environment, Environment::Live);
    assert_eq!(rotation.created.rotated_from, Some(OLD));
}

// ---------------------------------------------------------------------------------------------
// Rotate: the old token's grace period
// ---------------------------------------------------------------------------------------------

#[test]
fn rotate_with_the_default_grace_keeps_the_old_token_for_24_hours() {
    let rotation = when_rotate(&given_active(), &rotate()).expect("accepted");
    assert_eq!(
        rotation.rotated,
        TokenRotated {
            successor_id: SUCCESSOR,
            old_expires_at: NOW.plus(hours(24)),
            until_successor_used: false,
        }
    );
    assert_eq!(rotation.revoked, None);
}

#[test]
fn rotate_with_an_explicit_grace_keeps_the_old_token_that_long() {
    let cmd = RotateToken {
        grace: Some(Grace::For(hours(2))),
        ..rotate()
    };
    let rotation = when_rotate(&given_active(), &cmd).expect("accepted");
    assert_eq!(rotation.rotated.old_expires_at, NOW.plus(hours(2)));
    assert_eq!(rotation.revoked, None);
}

#[test]
fn rotate_never_extends_the_old_token_beyond_its_own_expiry() {
    let old_expiry = NOW.plus(hours(1));
    let given = given_token(Environment::Test, &["console:exec"], old_expiry);
    let rotation = when_rotate(&given, &rotate()).expect("accepted");
    assert_eq!(rotation.rotated.old_expires_at, old_expiry);
}

#[test]
fn rotate_with_zero_grace_revokes_the_old_token_now() {
    let cmd = RotateToken {
        grace: Some(Grace::For(Duration::ZERO)),
        ..rotate()
    };
    let rotation = when_rotate(&given_active(), &cmd).expect("accepted");
    assert_eq!(rotation.rotated.old_expires_at, NOW);
    assert_eq!(
        rotation.revoked,
        Some(TokenRevoked {
            actor: "bob@example.com".into(),
            reason: Some(format!("rotated to {SUCCESSOR} with no grace period")),
        })
    );
}

#[test]
fn rotation_folded_into_the_old_stream_keeps_it_working_until_the_grace_ends() {
    let given = given_active();
    let rotation = when_rotate(&given, &rotate()).expect("accepted");
    let row = given.then(NOW, TokenEvent::Rotated(rotation.rotated)).row();
    assert_eq!(row.rotated_to, Some(SUCCESSOR));
    assert_eq!(row.expires_at, NOW.plus(hours(24)));
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), NOW.plus(hours(23))),
        allowed()
    );
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), NOW.plus(hours(24))),
        denied(DenyReason::Expired)
    );
}

#[test]
fn rotation_with_zero_grace_folded_into_the_old_stream_denies_it_as_revoked() {
    let given = given_active();
    let cmd = RotateToken {
        grace: Some(Grace::For(Duration::ZERO)),
        ..rotate()
    };
    let rotation = when_rotate(&given, &cmd).expect("accepted");
    let revoked = rotation.revoked.expect("a zero grace revokes");
    let row = given
        .then(NOW, TokenEvent::Rotated(rotation.rotated))
        .then(NOW, TokenEvent::Revoked(revoked))
        .row();
    assert_eq!(
        decide_use(&TokenEntry::of(&row), &console_use(), NOW),
        denied(DenyReason::Revoked)
    );
}

// ---------------------------------------------------------------------------------------------
// Rotate: refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn rotate_of_a_revoked_token_is_refused_as_already_revoked() {
    let err = when_rotate(&given_revoked(), &rotate()).expect_err("refused");
    assert_eq!(err, DomainError::AlreadyRevoked(OLD));
    assert_eq!(err.to_string(), format!("token {OLD} is already revoked"));
}

#[test]
fn rotate_of_an_expired_token_is_refused_as_expired() {
    let given = given_token(Environment::Test, &["console:exec"], NOW.minus(days(1)));
    let err = when_rotate(&given, &rotate()).expect_err("refused");
    assert_eq!(err, DomainError::Expired(OLD));
    assert_eq!(
        err.to_string(),
        format!("token {OLD} has expired; create a new token instead")
    );
}

#[test]
fn rotate_at_the_exact_expiry_instant_is_refused_as_expired() {
    let given = given_token(Environment::Test, &["console:exec"], NOW);
    assert_eq!(
        when_rotate(&given, &rotate()),
        Err(DomainError::Expired(OLD))
    );
}

#[test]
fn rotate_of_a_token_in_its_grace_period_is_refused_naming_the_successor() {
    let err = when_rotate(&given_rotated(), &rotate()).expect_err("refused");
    assert_eq!(err, DomainError::AlreadyRotated(OLD, EARLIER_SUCCESSOR));
    assert_eq!(
        err.to_string(),
        format!(
            "token {OLD} was already rotated to {EARLIER_SUCCESSOR}; rotate its successor instead"
        )
    );
}

#[test]
fn rotate_of_a_rotated_token_after_its_grace_is_refused_naming_the_successor() {
    // The rotation link is checked before expiry, so the answer points at the token to rotate.
    let given =
        given_active().then_rotated(NOW.minus(days(2)), EARLIER_SUCCESSOR, NOW.minus(days(1)));
    assert_eq!(
        when_rotate(&given, &rotate()),
        Err(DomainError::AlreadyRotated(OLD, EARLIER_SUCCESSOR))
    );
}

// ---------------------------------------------------------------------------------------------
// format_duration
// ---------------------------------------------------------------------------------------------

#[test]
fn format_duration_uses_the_largest_unit_that_divides_exactly() {
    assert_eq!(format_duration(secs(90)), "90s");
    assert_eq!(format_duration(minutes(15)), "15m");
    assert_eq!(format_duration(hours(23)), "23h");
    assert_eq!(format_duration(days(30)), "30d");
}

#[test]
fn format_duration_shows_24_hours_as_one_day() {
    assert_eq!(format_duration(hours(24)), "1d");
    assert_eq!(format_duration(hours(36)), "36h");
}

#[test]
fn format_duration_shows_zero_as_0s() {
    assert_eq!(format_duration(Duration::ZERO), "0s");
}

#[test]
fn format_duration_falls_back_to_seconds_when_no_unit_divides() {
    assert_eq!(format_duration(secs(3601)), "3601s");
    assert_eq!(format_duration(secs(86_401)), "86401s");
}
