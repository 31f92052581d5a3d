-- Run once by the mysql image when its data volume is new (/docker-entrypoint-initdb.d),
-- after it created the user MYSQL_USER (`sagashop`). One server holds the five service
-- databases, named as scripts/cluster.sh names them (<cluster name>_<service>); the nodes
-- create a missing one themselves and migrate them all on start, so this file only has to
-- make sure the user may.
CREATE DATABASE IF NOT EXISTS `sagashop_account` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `sagashop_product` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `sagashop_order` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `sagashop_payment` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `sagashop_saga` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

GRANT ALL PRIVILEGES ON `sagashop_account`.* TO 'sagashop'@'%';
GRANT ALL PRIVILEGES ON `sagashop_product`.* TO 'sagashop'@'%';
GRANT ALL PRIVILEGES ON `sagashop_order`.* TO 'sagashop'@'%';
GRANT ALL PRIVILEGES ON `sagashop_payment`.* TO 'sagashop'@'%';
GRANT ALL PRIVILEGES ON `sagashop_saga`.* TO 'sagashop'@'%';
FLUSH PRIVILEGES;
