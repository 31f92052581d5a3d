//! Hand-written diesel schema shared by SQLite and MySQL (ids are signed BIGINT: Sonyflake ids
//! fit in 63 bits). Each table lives in its own service database.

diesel::table! {
    customers (id) {
        id -> BigInt,
        active -> Bool,
        first_name -> Text,
        last_name -> Text,
        email -> Text,
        email_key -> Text,
        address -> Text,
        phone_number -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        token_version -> BigInt,
    }
}

diesel::table! {
    products (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        brand_name -> Text,
        price -> BigInt,
        inventory -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    reservations (purchase_id, product_id) {
        purchase_id -> BigInt,
        product_id -> BigInt,
        amount -> BigInt,
    }
}

diesel::table! {
    step_ledger (purchase_id) {
        purchase_id -> BigInt,
        status -> Text,
        detail -> Text,
        updated_at -> BigInt,
        owner_epoch -> BigInt,
    }
}

diesel::table! {
    orders (id, product_id) {
        id -> BigInt,
        product_id -> BigInt,
        amount -> BigInt,
        customer_id -> BigInt,
    }
}

diesel::table! {
    payments (id) {
        id -> BigInt,
        customer_id -> BigInt,
        currency_code -> Text,
        amount -> BigInt,
    }
}

diesel::table! {
    partitions (partition_id) {
        partition_id -> Integer,
        owner_node -> Integer,
        epoch -> BigInt,
        lease_expires_at -> BigInt,
        next_seq -> BigInt,
        pruned_up_to -> BigInt,
    }
}

diesel::table! {
    store_meta (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    sagas (purchase_id) {
        purchase_id -> BigInt,
        partition_id -> Integer,
        customer_id -> BigInt,
        items -> Text,
        currency_code -> Text,
        amount -> BigInt,
        state -> Text,
        finished -> Bool,
        version -> BigInt,
        attempts -> Integer,
        retry_since -> BigInt,
        quarantine -> Nullable<Text>,
        retry_requested -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        log_pruned -> Bool,
        trace_context -> Nullable<Text>,
    }
}

diesel::table! {
    saga_events (partition_id, event_id) {
        partition_id -> Integer,
        event_id -> BigInt,
        purchase_id -> BigInt,
        saga_seq -> Integer,
        customer_id -> BigInt,
        step -> Text,
        status -> Text,
        created_at -> BigInt,
    }
}
