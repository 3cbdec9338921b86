//! Properties of the Endorse service's request parsing
//! (`simgate::services::endorse::claims`).
//!
//! Input: byte 0 picks the method (GET, POST, PUT, HEAD), byte 1 the
//! group's `parametersToEndorse` flags (bits 0–4: imsi, imei, msisdn, simId,
//! requestParameters); the rest is both the path (invalid UTF-8 replaced)
//! and the query or form text.
//!
//! Properties:
//! * `parse` never panics; a token only for GET or POST on `/`; a key only
//!   for a well-formed kid, exactly the path's last part; the JWKS only at
//!   its path.
//! * `parse_params` never panics; what it accepts has at most
//!   `MAX_PARAMETERS` names, and encoding it again (every byte but ASCII
//!   alphanumerics as `%XX`) parses back to the same parameters.
//! * `claims` carries exactly the endorsed facts, the parameters as parsed
//!   (when endorsed and any), and `exp − iat` = the timeout.
//! * `redirect_target` takes `redirect_url` out of the parameters and
//!   follows it only when it is exactly an authorized URL;
//!   `redirect_location` keeps the target and adds the token once;
//!   `redirect_form` escapes what it embeds (one `<input` per field, the
//!   parameters' text never opening a tag).
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use serde_json::Value;
use simgate::services::endorse::claims::{
    claims, is_kid, parse, parse_params, redirect_form, redirect_location, Endorsed, Op, Settings,
    Sim, MAX_PARAMETERS, REDIRECT_PARAMETER, TOKEN_PARAMETER,
};

const AUTHORIZED: &str = "https://app.example/login";

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "HEAD"];

pub(crate) fn check(data: &[u8]) {
    let [m, flags, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let path = String::from_utf8_lossy(rest);
    match parse(method, &path) {
        Ok(Op::Token) => {
            assert!(matches!(method, "GET" | "POST"), "{method} {path}");
            assert!(path == "/" || path.is_empty(), "{path}");
        }
        Ok(Op::Key(kid)) => {
            assert!(is_kid(&kid), "{kid}");
            assert_eq!(path, format!("/v1/endorse/keys/{kid}"));
        }
        Ok(Op::Jwks) => assert_eq!(path, "/.well-known/jwks.json"),
        Err(_) => {}
    }

    let Ok(params) = parse_params(rest) else {
        return;
    };
    assert!(params.len() <= MAX_PARAMETERS);
    let again: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v.as_str().expect("a string"))))
        .collect();
    assert_eq!(
        parse_params(again.join("&").as_bytes()).as_ref(),
        Ok(&params),
        "round trip of {:?}",
        String::from_utf8_lossy(rest)
    );

    let bit = |n: u8| flags & (1 << n) != 0;
    let settings = Settings {
        enabled: true,
        endorsed: Endorsed {
            imsi: bit(0),
            imei: bit(1),
            msisdn: bit(2),
            sim_id: bit(3),
            request_parameters: bit(4),
        },
        timeout_secs: 600,
        allow_origin: None,
        authorized_redirect_urls: vec![AUTHORIZED.to_owned()],
    };
    let mut without = params.clone();
    let asked = params.get(REDIRECT_PARAMETER).and_then(Value::as_str);
    match settings.redirect_target(&mut without) {
        Ok(Some(url)) => assert_eq!((url.as_str(), asked), (AUTHORIZED, Some(AUTHORIZED))),
        Ok(None) => assert!(asked.is_none()),
        Err(e) => assert_eq!(Some(e.0.as_str()), asked),
    }
    assert!(!without.contains_key(REDIRECT_PARAMETER));
    if let Some(url) = asked {
        let token = "eyJ.a-b_c.d";
        let location = redirect_location(url, token);
        let base = url.split('#').next().unwrap_or_default();
        assert!(location.starts_with(base), "{location:?} from {url:?}");
        let needle = format!("{TOKEN_PARAMETER}={token}");
        assert_eq!(
            location.matches(&needle).count(),
            url.matches(&needle).count() + 1
        );
        let form = redirect_form(url, token, &without);
        let fields = 1 + without.values().filter(|v| v.is_string()).count();
        assert_eq!(form.matches("<input").count(), fields, "{form}");
        assert_eq!(form.matches("<form").count(), 1, "{form}");
    }
    let sim = Sim {
        imsi: "001010000000001",
        imei: Some("353000000000001"),
        msisdn: None,
        sim_id: Some("8942"),
    };
    let empty = params.is_empty();
    let c = claims("iss", &sim, &settings, params.clone(), 1_000, "j");
    assert_eq!(c["exp"].as_u64(), Some(1_600));
    let e = &c["soracom-endorse-claim"];
    assert_eq!(e.get("imsi").is_some(), bit(0));
    assert_eq!(e.get("imei").is_some(), bit(1));
    assert!(e.get("msisdn").is_none(), "no MSISDN to endorse");
    assert_eq!(e.get("simId").is_some(), bit(3));
    match e.get("requestParameters") {
        Some(p) => {
            assert!(bit(4) && !empty);
            assert_eq!(p, &Value::Object(params));
        }
        None => assert!(!bit(4) || empty),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
