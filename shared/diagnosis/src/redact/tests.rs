use super::*;

#[test]
fn sas_signature_in_a_url() {
    let text = "download failed: https://acct.blob.core.windows.net/in/x.csv?sv=2022-11-02&se=2026-01-01&sp=r&sig=AbC%2Bdef%3D ok";
    let out = redact(text);
    assert!(!out.contains("AbC%2Bdef"), "{out}");
    assert!(out.contains("sig=[REDACTED] ok"), "{out}");
    assert!(
        out.contains("sv=2022-11-02"),
        "non-secret parameters stay: {out}"
    );
}

#[test]
fn connection_strings_and_tokens() {
    let text = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=bXlrZXk=;EndpointSuffix=core.windows.net";
    let out = redact(text);
    assert!(!out.contains("bXlrZXk"), "{out}");
    assert!(out.contains("AccountName=a"));
    let out = redact("Authorization: Bearer eyJ0eXAiOiJKV1Qi.abc.def\nnext");
    assert_eq!(out, "Authorization: Bearer [REDACTED]\nnext");
    let out = redact("Authorization: SharedKey devbatch1:c2lnbmF0dXJl");
    assert!(!out.contains("c2lnbmF0dXJl"), "{out}");
    let out = redact("Password=hunter2;User=x");
    assert_eq!(out, "Password=[REDACTED];User=x");
}

#[test]
fn idempotent_and_harmless_on_plain_text() {
    let plain = "exit code 1: x = 2, y=3; nothing secret here";
    assert_eq!(redact(plain), plain);
    let once = redact("?sig=abc&x=1");
    assert_eq!(redact(&once), once);
    assert_eq!(
        strip_query("https://a/b/c.txt?sv=1&sig=2"),
        "https://a/b/c.txt"
    );
}

/// Each shape of secret, as it appears in real stderr, with the secret part that must go.
const LEAKS: &[(&str, &str, &str)] = &[
    (
        "URL-encoded sig inside a URL",
        "GET https://proxy/fetch?target=https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fx%3Fsv%3D2022%26sig%3DQk9HVVNzaWc%252B%26se%3D1 failed",
        "Qk9HVVNzaWc",
    ),
    (
        "JSON sig",
        r#"{"uri": "https://a/b", "sig": "SlNPTnNpZ25hdHVyZQ==", "n": 1}"#,
        "SlNPTnNpZ25hdHVyZQ",
    ),
    (
        "JSON accountKey",
        r#"{"accountName":"a","accountKey":"QWNjb3VudEtleUluSlNPTg=="}"#,
        "QWNjb3VudEtleUluSlNPTg",
    ),
    (
        "JSON value with an escaped quote",
        r#"{"password": "hun\"ter2-tail", "user": "x"}"#,
        "ter2-tail",
    ),
    ("sig with spaces", "sig = c3BhY2VkU2ln&x=1", "c3BhY2VkU2ln"),
    (
        "basic auth in an https URL",
        "fetching https://deploy:s3cr3t-pa55@registry.example.com/v2/ failed",
        "s3cr3t-pa55",
    ),
    (
        "basic auth in a postgres URL",
        "could not connect to postgres://app:pg-Pa55word@db.internal:5432/app",
        "pg-Pa55word",
    ),
    (
        "PEM private key",
        "loading key\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq1w2e3r4\nt5y6u7i8o9p0\n-----END RSA PRIVATE KEY-----\ndone",
        "MIIEowIBAAKCAQEAq1w2e3r4",
    ),
    (
        "PEM private key cut by the tail",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nt5y6u7",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ),
    (
        "api_key",
        "calling api with api_key=ak_live_123456789 now",
        "ak_live_123456789",
    ),
    (
        "api-key header style",
        "api-key=0a1b2c3d4e5f",
        "0a1b2c3d4e5f",
    ),
    (
        "*_SECRET assignment",
        "export AZURE_CLIENT_SECRET=Q~abc.defGHI_jkl",
        "Q~abc.defGHI_jkl",
    ),
    (
        "*_KEY assignment",
        "STORAGE_ACCOUNT_KEY=c3RvcmFnZWtleQ== ./run.sh",
        "c3RvcmFnZWtleQ",
    ),
    (
        "*_TOKEN in env dump",
        "GITHUB_TOKEN='ghp_abcdef123456'",
        "ghp_abcdef123456",
    ),
    (
        "Functions key in a query",
        "POST https://f.azurewebsites.net/api/x?code=ZnVuY3Rpb25rZXk= 401",
        "ZnVuY3Rpb25rZXk",
    ),
    (
        "connection string",
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Y29ubnN0cg==;EndpointSuffix=core.windows.net",
        "Y29ubnN0cg",
    ),
    (
        "Python dict",
        "{'password': 'py-dict-pass', 'user': 'x'}",
        "py-dict-pass",
    ),
];

/// Text that looks a little like a secret and must come through untouched.
const NOT_SECRETS: &[&str] = &[
    "process killed: signal=9",
    "design=x",
    "https://example.com:8443/path/to/file?x=1",
    "postgres://db.internal:5432/app",
    "KEYBOARD=us",
    "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f163bf0f4c8b6e6e1d8c4e4f1a2",
    "the sig parameter is missing from the URL; see sig: docs",
    "exit code=1",
    "token: expired, retrying",
    "keys=3 secrets=0",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "user@example.com wrote x = 2, y=3",
    r#"{"name": "job-1", "signal": 9}"#,
];

#[test]
fn every_shape_of_secret_is_redacted() {
    for (shape, text, secret) in LEAKS {
        let out = redact(text);
        assert!(!out.contains(secret), "{shape}: {out}");
        assert!(out.contains(REDACTED), "{shape}: {out}");
        assert_eq!(redact(&out), out, "{shape}: not idempotent");
    }
}

#[test]
fn what_is_not_a_secret_is_untouched() {
    for text in NOT_SECRETS {
        assert_eq!(redact(text), *text);
    }
}

#[test]
fn redaction_keeps_the_context_around_a_secret() {
    assert_eq!(
        redact("sig = abc&sv=1"),
        "sig = [REDACTED]&sv=1",
        "the name, spacing and the next parameter stay"
    );
    assert_eq!(
        redact("https://deploy:pw-1234@h/x"),
        "https://deploy:[REDACTED]@h/x"
    );
    assert_eq!(
        redact(r#"{"accountKey": "abc", "n": 1}"#),
        r#"{"accountKey": "[REDACTED]", "n": 1}"#
    );
    assert_eq!(
        redact("a%3Fsv%3D1%26sig%3Dxyz%26se%3D2"),
        "a%3Fsv%3D1%26sig%3D[REDACTED]%26se%3D2"
    );
    let pem = redact("x\n-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\ny");
    assert_eq!(
        pem,
        "x\n-----BEGIN EC PRIVATE KEY-----\n[REDACTED]\n-----END EC PRIVATE KEY-----\ny"
    );
}

#[test]
fn a_redactor_removes_configured_secrets_in_every_form() {
    let key = "p@ss+word/42==";
    let redactor = Redactor::new([key, "short", ""]);
    let percent = "p%40ss%2Bword%2F42%3D%3D";
    let json_escaped = "a\\\"b-secret-value";
    let with_quote = Redactor::new(["a\"b-secret-value"]);
    for text in [
        format!("the key is {key} (bare)"),
        format!("url?x={percent}&y=1"),
        format!("lower {}", percent.to_lowercase()),
        // base64 of the secret, as a header or a data URL would carry it.
        "cEBzcyt3b3JkLzQyPT0= encoded".to_owned(),
    ] {
        let out = redactor.redact(&text);
        assert!(!out.contains("word/42"), "{out}");
        assert!(!out.contains("word%2F42"), "{out}");
        assert!(!out.to_lowercase().contains("word%2f42"), "{out}");
        assert!(!out.contains("cEBzcyt3b3JkLzQy"), "{out}");
        assert!(out.contains(REDACTED), "{out}");
        assert_eq!(redactor.redact(&out), out, "idempotent");
    }
    let out = with_quote.redact(&format!(r#"{{"v": "{json_escaped}"}}"#));
    assert!(!out.contains("b-secret-value"), "{out}");
    // Too short to match safely: left alone, and shapes are still redacted.
    assert_eq!(redactor.redact("short story"), "short story");
    assert_eq!(redactor.redact("sig=abc"), "sig=[REDACTED]");
    assert!(!format!("{redactor:?}").contains("word"));
    assert!(Redactor::default().is_empty());
    assert!(!redactor.is_empty());
}

#[test]
fn a_configured_secret_inside_a_shape_leaves_no_fragment() {
    // A secret with a delimiter in it: replaced whole before the shapes cut it at the `;`.
    let redactor = Redactor::new(["ab;cd-ef-gh"]);
    let out = redactor.redact("password=ab;cd-ef-gh;x=1");
    assert!(!out.contains("cd-ef"), "{out}");
}

proptest::proptest! {
    #[test]
    fn redaction_is_idempotent_and_total(text in "\\PC{0,200}") {
        let once = redact(&text);
        proptest::prop_assert_eq!(redact(&once), once.clone());
        let r = Redactor::new(["configured-secret"]);
        let once = r.redact(&text);
        proptest::prop_assert_eq!(r.redact(&once), once);
    }
}

#[test]
fn a_redactor_cleans_every_free_text_field_of_a_diagnosis() {
    let key = "Y29uZmlndXJlZC1rZXk=";
    let leak = format!("echo {key}");
    let mut d: Diagnosis = serde_json::from_value(serde_json::json!({
        "class": "task.exit_code", "severity": "error", "fingerprint": "fp",
        "summary": leak, "cause": leak, "hints": [leak], "logs": [leak],
        "failure": {"message": leak, "details": [{"name": "n", "value": leak}]},
        "subject": {"jobId": "job-1", "taskId": "t-1"}
    }))
    .unwrap();
    Redactor::new([key]).redact_diagnosis(&mut d);
    let json = serde_json::to_string(&d).unwrap();
    assert!(!json.contains("Y29uZmlndXJlZC1rZXk"), "{json}");
    assert_eq!(json.matches(REDACTED).count(), 6, "{json}");
    assert!(
        json.contains("job-1") && json.contains("\"fp\""),
        "ids stay: {json}"
    );
}
