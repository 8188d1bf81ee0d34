//! Erasure of a data subject's personal data (`member.erase`, `admin.erase`, `user.erase`,
//! `task.eraseContent`): the values an erased field takes inside the domain, and the one
//! refusal every later write of personal data about an erased subject gets.
//!
//! An erased subject keeps its id, links, enums and timestamps; its personal fields read as
//! placeholders here (a reserved `.invalid` address, the word `erased`, no phone) so the state
//! stays well-formed and no decision ever needs the erased value. Readers outside the domain
//! show `null` and an `erased: true` marker, never these placeholders.

use crate::error::{DomainError, EntityKind};
use crate::values::{Address, Email, Name};

/// The text an erased name, subject or content reads as inside the domain.
pub const ERASED_TEXT: &str = "erased";

/// The address an erased email or task address reads as inside the domain.
pub const ERASED_ADDRESS: &str = "erased@erased.invalid";

/// An erased name.
pub fn erased_name() -> Name {
    Name::parse(ERASED_TEXT).expect("the placeholder is a valid name")
}

/// An erased email.
pub fn erased_email() -> Email {
    Email::parse(ERASED_ADDRESS).expect("the placeholder is a valid email")
}

/// An erased task address.
pub fn erased_address() -> Address {
    Address::parse(ERASED_ADDRESS).expect("the placeholder is a valid address")
}

/// The refusal of a command that would write personal data about an erased subject again:
/// `invalid_transition` (`cannot <action> a <entity> that is erased`).
pub fn refuse_erased(entity: EntityKind, action: &'static str) -> DomainError {
    DomainError::InvalidTransition {
        entity,
        action,
        status: "erased",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholders_are_valid_values() {
        assert_eq!(erased_name().as_str(), ERASED_TEXT);
        assert_eq!(erased_email().as_str(), ERASED_ADDRESS);
        assert_eq!(erased_address().to_string(), ERASED_ADDRESS);
        assert_eq!(
            refuse_erased(EntityKind::Member, "update").to_string(),
            "cannot update a member that is erased"
        );
    }
}
