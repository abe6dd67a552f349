//! The contacts directory: a name (and the CRM's id) for an E.164 number, kept in the call
//! log's database. Numbers are normalised before they are stored or looked up, so
//! `+1 (555) 123-0001`, `0015551230001` and `+15551230001` are one entry.

use super::db::{args, Db};

use super::StoreError;

/// Longest name or CRM id a contact keeps (a CRM's whole record does not belong here).
pub const MAX_FIELD: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub number: String,
    pub name: String,
    pub prospect_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(skip)]
    pub updated_at: i64,
}

/// `number` as E.164 (`+` and 8 to 15 digits), or why it is not one. Spaces, dashes, dots
/// and parentheses are dropped; an international prefix `00` becomes `+`; digits without
/// either are taken as a full number with its country code when there are at least 11 of
/// them and no national `0` prefix (what trunks send without the `+`); otherwise they get
/// `country_code` (with one national `0` prefix dropped) when the operator set one.
pub fn normalise(number: &str, country_code: Option<&str>) -> Result<String, &'static str> {
    let trimmed = number.trim();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err("only digits, +, spaces, dashes, dots and parentheses"),
        }
    }
    let full = if plus {
        digits
    } else if let Some(international) = digits.strip_prefix("00") {
        international.to_string()
    } else if digits.len() >= 11 && !digits.starts_with('0') {
        digits
    } else if let Some(cc) = country_code {
        format!("{cc}{}", digits.strip_prefix('0').unwrap_or(&digits))
    } else {
        return Err("not E.164: give the + and country code");
    };
    if !(8..=15).contains(&full.len()) || full.starts_with('0') {
        return Err("not E.164: 8 to 15 digits after the +, not starting with 0");
    }
    Ok(format!("+{full}"))
}

pub fn get(db: &mut Db, number: &str) -> Result<Option<Contact>, StoreError> {
    db.query_one(
        "SELECT number, name, prospect_id, updated_at FROM contacts WHERE number = ?1",
        args![number],
        |r| {
            Ok(Contact {
                number: r.get(0)?,
                name: r.get(1)?,
                prospect_id: r.get(2)?,
                updated_at: r.get(3)?,
            })
        },
    )
}

/// Insert or replace entries, all of them or none.
pub fn put_all(db: &mut Db, contacts: &[Contact]) -> Result<(), StoreError> {
    db.transaction(|tx| {
        for c in contacts {
            tx.execute(
                "INSERT INTO contacts (number, name, prospect_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(number) DO UPDATE SET name = excluded.name,
                    prospect_id = excluded.prospect_id, updated_at = excluded.updated_at",
                args![c.number, c.name, c.prospect_id, c.updated_at],
            )?;
        }
        Ok(())
    })
}

/// Whether there was an entry to delete.
pub fn delete(db: &mut Db, number: &str) -> Result<bool, StoreError> {
    Ok(db.execute("DELETE FROM contacts WHERE number = ?1", args![number])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164() {
        for (given, cc, want) in [
            ("+15551230001", None, "+15551230001"),
            ("+1 (555) 123-0001", None, "+15551230001"),
            ("0015551230001", None, "+15551230001"),
            ("15551230001", None, "+15551230001"),
            ("020 7946 0958", Some("44"), "+442079460958"),
            ("555.123.0001", Some("1"), "+15551230001"),
        ] {
            assert_eq!(normalise(given, cc).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "",
            "+",
            "+123",
            "5551230001",
            "+1555abc0001",
            "+0123456789",
            "+1234567890123456",
        ] {
            assert!(normalise(bad, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn entries_are_put_replaced_read_and_deleted() {
        let dir = std::env::temp_dir().join(format!("cg-contacts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut conn = super::super::Location::Sqlite(dir.join("c.db").to_path_buf())
            .open()
            .expect("open");
        let riley = Contact {
            number: "+15551230001".into(),
            name: "Riley Example".into(),
            prospect_id: Some("crm-1".into()),
            updated_at: 1,
        };
        put_all(&mut conn, std::slice::from_ref(&riley)).expect("put");
        assert_eq!(
            get(&mut conn, "+15551230001").expect("get"),
            Some(riley.clone())
        );
        let renamed = Contact {
            name: "Riley Renamed".into(),
            prospect_id: None,
            updated_at: 2,
            ..riley
        };
        put_all(&mut conn, std::slice::from_ref(&renamed)).expect("replace");
        assert_eq!(get(&mut conn, "+15551230001").expect("get"), Some(renamed));
        assert!(delete(&mut conn, "+15551230001").expect("delete"));
        assert!(!delete(&mut conn, "+15551230001").expect("delete again"));
        assert_eq!(get(&mut conn, "+15551230001").expect("get"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
