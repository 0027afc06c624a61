//! The event codec: decoding arbitrary bytes never panics; whatever decodes re-encodes (in its
//! own format version: 2, or 1 for the JSON of logs written before) to canonical bytes that
//! decode to the same event and header, and re-encode to themselves.
//! From the other side, any event built from the same bytes encodes and decodes to itself.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tokenledger_events::codec::{self, Decoded};
use tokenledger_events::{
    Commitment, DenyReason, Environment, StreamId, Timestamp, TokenCreated, TokenEvent,
    TokenLeakReported, TokenRevoked, TokenRotated, TokenUseDenied, TokenUseDeniedSummary,
    TokenUsed,
};
use uuid::Uuid;

fn encode(d: &Decoded) -> Vec<u8> {
    let encode = if d.header.schema_version == 1 {
        codec::encode_v1
    } else {
        codec::encode
    };
    encode(
        d.header.event_id,
        &d.header.stream_id,
        d.header.stream_version,
        d.header.recorded_at,
        &d.header.actor,
        &d.event,
    )
}

fn uuid(u: &mut Unstructured<'_>) -> Result<Uuid> {
    Ok(Uuid::from_u128(u.arbitrary()?))
}

fn time(u: &mut Unstructured<'_>) -> Result<Timestamp> {
    Ok(Timestamp::from_micros(u.arbitrary()?))
}

fn reason(u: &mut Unstructured<'_>) -> Result<DenyReason> {
    Ok(*u.choose(&[
        DenyReason::Revoked,
        DenyReason::Expired,
        DenyReason::InsufficientScope,
        DenyReason::EnvironmentMismatch,
        DenyReason::IpNotAllowed,
        DenyReason::ReuseDetected,
    ])?)
}

fn event(u: &mut Unstructured<'_>) -> Result<TokenEvent> {
    Ok(match u.int_in_range(0..=6)? {
        0 => TokenEvent::Created(TokenCreated {
            token_id: uuid(u)?,
            name: u.arbitrary()?,
            scopes: u.arbitrary()?,
            environment: if u.arbitrary()? {
                Environment::Live
            } else {
                Environment::Test
            },
            expires_at: time(u)?,
            created_by: u.arbitrary()?,
            secret_commitment: Commitment(u.arbitrary()?),
            rotated_from: if u.arbitrary()? { Some(uuid(u)?) } else { None },
            allowed_ips: u.arbitrary()?,
        }),
        1 => TokenEvent::Used(TokenUsed {
            ip: u.arbitrary()?,
            method: u.arbitrary()?,
            path: u.arbitrary()?,
            command: u.arbitrary()?,
            user_agent: u.arbitrary()?,
        }),
        2 => TokenEvent::UseDenied(TokenUseDenied {
            reason: reason(u)?,
            ip: u.arbitrary()?,
            path: u.arbitrary()?,
        }),
        5 => TokenEvent::UseDeniedSummary(TokenUseDeniedSummary {
            reason: reason(u)?,
            ip: u.arbitrary()?,
            path: u.arbitrary()?,
            count: u.arbitrary()?,
            first_at: time(u)?,
            last_at: time(u)?,
            window_secs: u.arbitrary()?,
        }),
        3 => TokenEvent::Revoked(TokenRevoked {
            actor: u.arbitrary()?,
            reason: u.arbitrary()?,
        }),
        6 => TokenEvent::LeakReported(TokenLeakReported {
            url: u.arbitrary()?,
            source: u.arbitrary()?,
            token_type: u.arbitrary()?,
            reporter: u.arbitrary()?,
        }),
        _ => TokenEvent::Rotated(TokenRotated {
            successor_id: uuid(u)?,
            old_expires_at: time(u)?,
            until_successor_used: u.arbitrary()?,
        }),
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = codec::decode(data) {
        assert_eq!(decoded.header.event_type, decoded.event.event_type());
        assert!(
            [1, TokenEvent::CURRENT_SCHEMA].contains(&decoded.header.schema_version),
            "decoded schema version {}",
            decoded.header.schema_version
        );
        let canonical = encode(&decoded);
        let again = codec::decode(&canonical).expect("canonical bytes decode");
        assert_eq!(again, decoded);
        assert_eq!(
            encode(&again),
            canonical,
            "canonical bytes are a fixed point"
        );
    }

    let mut u = Unstructured::new(data);
    let Ok(event) = event(&mut u) else { return };
    let (Ok(event_id), Ok(version), Ok(at), Ok(actor), Ok(stream)) = (
        uuid(&mut u),
        u.arbitrary::<u64>(),
        time(&mut u),
        u.arbitrary::<String>(),
        u.arbitrary::<String>(),
    ) else {
        return;
    };
    let stream = StreamId::new(stream).unwrap_or_else(|_| StreamId::for_token(event_id));
    let bytes = codec::encode(event_id, &stream, version, at, &actor, &event);
    let decoded = codec::decode(&bytes).expect("an encoded event decodes");
    assert_eq!(decoded.event, event);
    assert_eq!(decoded.header.event_id, event_id);
    assert_eq!(decoded.header.stream_id, stream);
    assert_eq!(decoded.header.stream_version, version);
    assert_eq!(decoded.header.recorded_at, at);
    assert_eq!(decoded.header.actor, actor);
    assert_eq!(encode(&decoded), bytes);
});
