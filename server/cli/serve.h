/* `handsel serve`: run the HTTP/2 server. */
#ifndef HS_CLI_SERVE_H
#define HS_CLI_SERVE_H

#include <stdio.h>

int hs_cmd_serve_main(int argc, char **argv);
void hs_cmd_serve_help(FILE *out);

#endif
