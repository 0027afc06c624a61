//! OCSF records (schema 1.8.0 by default) for SIEMs: one record per token event.
//!
//! | event | OCSF class | activity | status |
//! |---|---|---|---|
//! | `TokenUsed` without a command | Authentication (3002, IAM 3) | Logon (1) | Success |
//! | `TokenUseDenied`, `TokenUseDeniedSummary` | Authentication (3002) | Logon (1) | Failure, `status_detail` the reason |
//! | `TokenUsed` with a command | API Activity (6003, Application 6) | Read (2): every console command and verify call of this service reads | Success |
//! | `TokenCreated` | Entity Management (3004, IAM 3) | Create (1) | Success |
//! | `TokenRotated` | Entity Management (3004) | Update (3) | Success |
//! | `TokenRevoked` | Entity Management (3004) | Delete (4) | Success |
//! | `TokenLeakReported` | Entity Management (3004) | Other (99), "Leak Reported" | Success, `comment` where it was found |
//!
//! The entity is `{"type": "api_token", "type_id": 99}` (Other) with the token id as `uid`.
//! The schema version a record claims is a parameter ([`OcsfOptions::version`]) because SIEMs
//! lag behind the schema. [`REQUIRED`] lists every attribute the schema requires of each class
//! (and of the objects used), as data; the tests check every record against it. Records are
//! built field by field, like audit rows, so a commitment, a hash or a salt has no way in.

use std::io::{self, Write};

use serde_json::{Map, Value, json};
use tokenledger_events::{StoredEvent, TokenEvent};

/// The OCSF schema version records claim unless told otherwise.
pub const OCSF_VERSION: &str = "1.8.0";

pub const AUTHENTICATION: u32 = 3002;
pub const API_ACTIVITY: u32 = 6003;
pub const ENTITY_MANAGEMENT: u32 = 3004;

/// What a record says about its producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcsfOptions {
    /// `metadata.version`: the OCSF schema version the records claim.
    pub version: String,
    /// `metadata.product.vendor_name`.
    pub vendor_name: String,
    /// `metadata.product.version`, when known.
    pub product_version: Option<String>,
}

impl Default for OcsfOptions {
    fn default() -> Self {
        OcsfOptions {
            version: OCSF_VERSION.to_owned(),
            vendor_name: "tokenledger".to_owned(),
            product_version: None,
        }
    }
}

/// The attributes OCSF 1.8.0 requires, as dotted paths, by class (0 for the base event, which
/// every class extends). `metadata.product` and `metadata.version` are the metadata object's
/// required attributes; `api.operation` the API object's.
pub const REQUIRED: &[(u32, &[&str])] = &[
    (
        0,
        &[
            "activity_id",
            "category_uid",
            "class_uid",
            "type_uid",
            "time",
            "severity_id",
            "metadata",
            "metadata.product",
            "metadata.product.name",
            "metadata.product.vendor_name",
            "metadata.version",
        ],
    ),
    (AUTHENTICATION, &["user"]),
    (
        API_ACTIVITY,
        &["actor", "api", "api.operation", "src_endpoint"],
    ),
    (ENTITY_MANAGEMENT, &["entity", "actor"]),
];

/// The schema's `at_least_one` constraints used here: per class, groups of which a record
/// holds at least one (Authentication's `service` or `dst_endpoint`; the user, endpoint,
/// actor and entity objects' identifying attributes).
pub const AT_LEAST_ONE: &[(u32, &[&str])] = &[
    (AUTHENTICATION, &["service", "dst_endpoint"]),
    (AUTHENTICATION, &["user.uid", "user.name", "user.account"]),
    (
        API_ACTIVITY,
        &[
            "src_endpoint.ip",
            "src_endpoint.name",
            "src_endpoint.hostname",
        ],
    ),
    (
        API_ACTIVITY,
        &["actor.user", "actor.process", "actor.app_name"],
    ),
    (ENTITY_MANAGEMENT, &["entity.uid", "entity.name"]),
    (
        ENTITY_MANAGEMENT,
        &["actor.user", "actor.process", "actor.app_name"],
    ),
];

fn lookup<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(record, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// The required attributes (and `at_least_one` groups) `record` lacks, by its `class_uid`.
pub fn missing_required(record: &Value) -> Vec<String> {
    let class = record
        .get("class_uid")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let mut missing = Vec::new();
    for (_, paths) in REQUIRED
        .iter()
        .filter(|(c, _)| *c == 0 || u64::from(*c) == class)
    {
        for path in *paths {
            if lookup(record, path).is_none() {
                missing.push((*path).to_owned());
            }
        }
    }
    for (_, group) in AT_LEAST_ONE.iter().filter(|(c, _)| u64::from(*c) == class) {
        if !group.iter().any(|path| lookup(record, path).is_some()) {
            missing.push(format!("one of {}", group.join(", ")));
        }
    }
    missing
}

const SEVERITY_INFORMATIONAL: u8 = 1;
const SEVERITY_LOW: u8 = 2;

/// The OCSF record of one event of a token stream; `None` for events outside token streams.
pub fn ocsf_record(
    event: &StoredEvent,
    decoded: &TokenEvent,
    options: &OcsfOptions,
) -> Option<Value> {
    let token_id = event.stream_id.token_id()?;
    let time = event.recorded_at.as_micros().div_euclid(1000);
    let token_user = json!({"uid": token_id.to_string(), "type": "Other", "type_id": 99});
    let service = json!({"name": "tokenledger"});
    let mut product = Map::new();
    product.insert("name".to_owned(), json!("tokenledger"));
    product.insert("vendor_name".to_owned(), json!(options.vendor_name));
    if let Some(version) = &options.product_version {
        product.insert("version".to_owned(), json!(version));
    }
    let metadata = json!({
        "product": product,
        "version": options.version,
        "uid": event.event_id.to_string(),
        "log_name": "tokenledger",
    });
    // (class, category, activity, activity name, success, severity, the class's own fields)
    let (class, category, activity, activity_name, status, mut fields) = match decoded {
        TokenEvent::Used(u) if u.command.is_some() => (
            API_ACTIVITY,
            6,
            2,
            "Read",
            None,
            json!({
                "actor": {"user": token_user},
                "api": {"operation": u.command, "service": service},
                "src_endpoint": endpoint(&u.ip),
                "http_request": http_request(&u.method, &u.path, &u.user_agent),
            }),
        ),
        TokenEvent::Used(u) => (
            AUTHENTICATION,
            3,
            1,
            "Logon",
            None,
            json!({
                "user": token_user,
                "service": service,
                "dst_endpoint": {"name": "tokenledger"},
                "src_endpoint": endpoint(&u.ip),
                "auth_protocol": "API token",
                "auth_protocol_id": 99,
                "http_request": http_request(&u.method, &u.path, &u.user_agent),
            }),
        ),
        TokenEvent::UseDenied(d) => (
            AUTHENTICATION,
            3,
            1,
            "Logon",
            Some(d.reason.as_str()),
            refused(&token_user, &service, &d.ip, &d.path),
        ),
        TokenEvent::UseDeniedSummary(d) => {
            (AUTHENTICATION, 3, 1, "Logon", Some(d.reason.as_str()), {
                let mut record = refused(&token_user, &service, &d.ip, &d.path);
                if let Some(object) = record.as_object_mut() {
                    object.insert("count".to_owned(), json!(d.count));
                    object.insert(
                        "start_time".to_owned(),
                        json!(d.first_at.as_micros().div_euclid(1000)),
                    );
                    object.insert(
                        "end_time".to_owned(),
                        json!(d.last_at.as_micros().div_euclid(1000)),
                    );
                }
                record
            })
        }
        TokenEvent::Created(c) => (
            ENTITY_MANAGEMENT,
            3,
            1,
            "Create",
            None,
            json!({
                "entity": api_token(token_id, Some(&c.name)),
                "actor": {"user": {"name": c.created_by}},
            }),
        ),
        TokenEvent::Rotated(r) => (
            ENTITY_MANAGEMENT,
            3,
            3,
            "Update",
            None,
            json!({
                "entity": api_token(token_id, None),
                "entity_result": api_token(r.successor_id, None),
                "actor": {"user": {"name": event.actor}},
            }),
        ),
        TokenEvent::Revoked(r) => (
            ENTITY_MANAGEMENT,
            3,
            4,
            "Delete",
            None,
            json!({
                "entity": api_token(token_id, None),
                "actor": {"user": {"name": r.actor}},
                "comment": r.reason,
            }),
        ),
        TokenEvent::LeakReported(l) => (
            ENTITY_MANAGEMENT,
            3,
            99,
            "Leak Reported",
            None,
            json!({
                "entity": api_token(token_id, None),
                "actor": {"user": {"name": l.reporter}},
                "comment": l.url,
            }),
        ),
    };
    let (status_id, status_name, severity) = match status {
        None => (1, "Success", SEVERITY_INFORMATIONAL),
        Some(_) => (2, "Failure", SEVERITY_LOW),
    };
    let fields = fields.as_object_mut()?;
    fields.retain(|_, v| !v.is_null());
    let mut record = json!({
        "activity_id": activity,
        "activity_name": activity_name,
        "category_uid": category,
        "class_uid": class,
        "type_uid": u64::from(class) * 100 + activity,
        "time": time,
        "severity_id": severity,
        "status_id": status_id,
        "status": status_name,
        "metadata": metadata,
        "unmapped": {"position": event.position, "stream_id": event.stream_id.as_str()},
    });
    let object = record.as_object_mut()?;
    if let Some(reason) = status {
        object.insert("status_detail".to_owned(), json!(reason));
    }
    object.extend(std::mem::take(fields));
    // GitHub's `source` and `type` have no OCSF attribute of their own.
    if let (TokenEvent::LeakReported(l), Some(unmapped)) = (
        decoded,
        object.get_mut("unmapped").and_then(Value::as_object_mut),
    ) {
        for (key, value) in [("source", &l.source), ("token_type", &l.token_type)] {
            if let Some(value) = value {
                unmapped.insert(key.to_owned(), json!(value));
            }
        }
    }
    Some(record)
}

/// Where a request came from; an address that was not recorded is named as unknown.
fn endpoint(ip: &Option<String>) -> Value {
    match ip {
        Some(ip) => json!({"ip": ip}),
        None => json!({"name": "unknown"}),
    }
}

/// The class-specific part of a refused authentication: a denial, or a window of repeats.
fn refused(token_user: &Value, service: &Value, ip: &Option<String>, path: &str) -> Value {
    json!({
        "user": token_user,
        "service": service,
        "dst_endpoint": {"name": "tokenledger"},
        "src_endpoint": endpoint(ip),
        "auth_protocol": "API token",
        "auth_protocol_id": 99,
        "http_request": {"url": {"path": path}},
    })
}

fn http_request(method: &str, path: &str, user_agent: &Option<String>) -> Value {
    let mut request = json!({"http_method": method, "url": {"path": path}});
    if let (Some(agent), Some(object)) = (user_agent, request.as_object_mut()) {
        object.insert("user_agent".to_owned(), json!(agent));
    }
    request
}

fn api_token(id: uuid::Uuid, name: Option<&str>) -> Value {
    let mut entity = json!({"type": "api_token", "type_id": 99, "uid": id.to_string()});
    if let (Some(name), Some(object)) = (name, entity.as_object_mut()) {
        object.insert("name".to_owned(), json!(name));
    }
    entity
}

/// Write one record as a compact JSON line.
pub fn write_ocsf_line(out: &mut impl Write, record: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}
