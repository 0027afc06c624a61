//! Given/when/then tests of every decision and every refusal.

use super::*;
