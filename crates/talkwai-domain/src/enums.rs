//! The seed's enumerations, with their wire (snake_case) forms.

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in the seed's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire form.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// A tenant's status.
    TenantStatus {
        /// Operating normally.
        Active => "active",
        /// Closed by the client; read-only.
        Inactive => "inactive",
        /// Stopped by TalkwAI (billing, abuse); read-only until reactivated.
        Suspended => "suspended",
    }
);

wire_enum!(
    /// A member's role within their tenant.
    MemberRole {
        /// Creates tasks and works the tasks assigned to them.
        User => "user",
        /// Manages tasks and agents.
        Manager => "manager",
        /// Manages members and the tenant itself.
        Owner => "owner",
    }
);

wire_enum!(
    /// A member's status.
    MemberStatus {
        /// May act.
        Active => "active",
        /// May not act or be assigned tasks.
        Inactive => "inactive",
    }
);

wire_enum!(
    /// An admin's platform role.
    AdminRole {
        /// Everything, including managing admins.
        Superadmin => "superadmin",
        /// Manages tenants and their data.
        Admin => "admin",
        /// Reads everything, works tasks.
        Support => "support",
    }
);

wire_enum!(
    /// An admin's status.
    AdminStatus {
        /// May act.
        Active => "active",
        /// May not act.
        Inactive => "inactive",
    }
);

wire_enum!(
    /// The channel an agent works on.
    AgentType {
        /// Phone calls.
        Voice => "voice",
        /// Chat conversations.
        Chat => "chat",
        /// Emails.
        Email => "email",
    }
);

wire_enum!(
    /// An agent's status.
    AgentStatus {
        /// Takes tasks.
        Active => "active",
        /// Takes no tasks.
        Inactive => "inactive",
        /// Being trained; may take tasks for evaluation.
        Training => "training",
    }
);

wire_enum!(
    /// What a task is.
    TaskType {
        /// A phone call.
        Call => "call",
        /// An email.
        Email => "email",
        /// Anything else.
        Other => "other",
    }
);

wire_enum!(
    /// Where a task is in its lifecycle.
    TaskStatus {
        /// Waiting to be worked.
        Pending => "pending",
        /// Being worked.
        InProgress => "in_progress",
        /// Done; final.
        Completed => "completed",
        /// Failed or cancelled; may be retried.
        Failed => "failed",
    }
);

wire_enum!(
    /// How urgent a task is.
    TaskPriority {
        /// Whenever.
        Low => "low",
        /// The default.
        Medium => "medium",
        /// Soon.
        High => "high",
        /// Now.
        Urgent => "urgent",
    }
);

impl Default for TaskPriority {
    /// `medium`, as the seed's `createTask` defaults it.
    fn default() -> Self {
        Self::Medium
    }
}
