DROP TABLE orchestrators;
