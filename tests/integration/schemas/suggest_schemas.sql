-- For `pg2neo mapping suggest --schema public --schema crm`: a foreign key across schemas, one table name in both
-- schemas (two labels), and a join table in the second schema between tables of both.

CREATE SCHEMA crm;

CREATE TABLE crm.accounts (
    id   integer PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE crm.notes (
    id   integer PRIMARY KEY,
    body text
);

CREATE TABLE notes (
    id   integer PRIMARY KEY,
    body text
);

CREATE TABLE contacts (
    id         integer PRIMARY KEY,
    account_id integer REFERENCES crm.accounts (id),
    name       text
);

CREATE TABLE crm.account_contacts (
    account_id integer NOT NULL REFERENCES crm.accounts (id),
    contact_id integer NOT NULL REFERENCES public.contacts (id),
    since      date,
    PRIMARY KEY (account_id, contact_id)
);

INSERT INTO crm.accounts VALUES (1, 'Acme'), (2, 'Globex');
INSERT INTO crm.notes VALUES (1, 'crm note');
INSERT INTO notes VALUES (1, 'public note'), (2, 'another');
INSERT INTO contacts VALUES (1, 1, 'Wile'), (2, NULL, 'Road');
INSERT INTO crm.account_contacts VALUES (1, 1, '2020-02-02'), (2, 1, NULL), (2, 2, NULL);
