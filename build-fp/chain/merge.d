build-fp/chain/merge.o: chain/merge.c chain/merge.h chain/chain.h \
 chain/layer_io.h chain/qcow2_writer.h common/crash.h common/log.h
chain/merge.h:
chain/chain.h:
chain/layer_io.h:
chain/qcow2_writer.h:
common/crash.h:
common/log.h:
