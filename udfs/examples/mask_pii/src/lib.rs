//! Masks personal data in free text, as a rivulet WASM scalar function:
//!
//! - e-mail addresses keep their first character and domain: `jane.doe@example.com` →
//!   `j***@example.com`;
//! - phone numbers (a run of 7 or more digits, with spaces, dashes, dots or parentheses between
//!   them, optionally after `+`) keep their last two digits: `+1 (555) 123-4567` → `***67`.
//!
//! ```sql
//! SELECT mask_pii(message) AS message FROM source
//! ```

/// `text` with its e-mail addresses and phone numbers masked.
pub fn mask_pii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&mask_email(word));
    }
    mask_phones(&out)
}

fn mask_email(word: &str) -> String {
    match word.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') =>
        {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        _ => word.to_owned(),
    }
}

fn mask_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
            || (chars[i] == '(' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()));
        if starts {
            // The longest run of digits and separators from here, ending on a digit.
            let mut end = i;
            let mut digits = Vec::new();
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || "+-. ()".contains(chars[j])) {
                if chars[j].is_ascii_digit() {
                    digits.push(chars[j]);
                    end = j + 1;
                }
                j += 1;
            }
            if digits.len() >= 7 {
                out.push_str("***");
                out.extend(&digits[digits.len() - 2..]);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

rivulet_udf::export! {
    fn mask_pii(text: &str) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_phones() {
        assert_eq!(
            mask_pii("mail jane.doe@example.com or call +1 (555) 123-4567 today"),
            "mail j***@example.com or call ***67 today"
        );
        assert_eq!(mask_pii("order 12345 shipped"), "order 12345 shipped");
        assert_eq!(mask_pii(""), "");
    }
}
