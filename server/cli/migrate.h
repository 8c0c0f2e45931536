/* `handsel migrate`: bring the database schema up to date. */
#ifndef HS_CLI_MIGRATE_H
#define HS_CLI_MIGRATE_H

#include <stdio.h>

int hs_cmd_migrate_main(int argc, char **argv);
void hs_cmd_migrate_help(FILE *out);

#endif
