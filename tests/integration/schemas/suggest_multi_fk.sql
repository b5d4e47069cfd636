-- For `pg2neo mapping suggest`: several foreign keys to one table (distinct types from the column names), self
-- references (one and two on one table), a self join table, and irregular plurals (people, statuses, categories).

CREATE TABLE people (
    id         integer PRIMARY KEY,
    name       text NOT NULL,
    manager_id integer REFERENCES people (id),
    mentor_id  integer REFERENCES people (id)
);

CREATE TABLE statuses (
    code  text PRIMARY KEY,
    label text NOT NULL
);

CREATE TABLE categories (
    id        integer PRIMARY KEY,
    parent_id integer REFERENCES categories (id),
    name      text NOT NULL
);

CREATE TABLE reviews (
    id          integer PRIMARY KEY,
    author_id   integer NOT NULL REFERENCES people (id),
    reviewer_id integer REFERENCES people (id),
    created_by  integer REFERENCES people (id),
    status_code text REFERENCES statuses (code),
    category_id integer REFERENCES categories (id),
    body        text,
    version     integer NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE friendships (
    person_id integer NOT NULL REFERENCES people (id),
    friend_id integer NOT NULL REFERENCES people (id),
    since     date,
    PRIMARY KEY (person_id, friend_id)
);

INSERT INTO people VALUES (1, 'Ada', NULL, NULL), (2, 'Grace', 1, NULL), (3, 'Linus', 1, 2), (4, 'Ken', 3, 3);
INSERT INTO statuses VALUES ('draft', 'Draft'), ('done', 'Done');
INSERT INTO categories VALUES (1, NULL, 'root'), (2, 1, 'child'), (3, 2, 'grandchild');
INSERT INTO reviews (id, author_id, reviewer_id, created_by, status_code, category_id, body) VALUES
    (1, 1, 2, 1, 'draft', 3, 'first'), (2, 2, NULL, 3, 'done', NULL, 'second'), (3, 4, 4, NULL, NULL, 1, NULL);
INSERT INTO friendships VALUES (1, 2, '2020-01-01'), (2, 1, NULL), (3, 4, '2021-06-30'), (4, 4, NULL);
