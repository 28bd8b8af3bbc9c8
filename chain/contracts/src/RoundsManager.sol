// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Manager} from "./Manager.sol";

/// @title RoundsManager
/// @notice Rounds of roundLength blocks; each round is initialized once, recording the hash of
/// the block before.
contract RoundsManager is Manager {
    uint256 public roundLength;
    uint256 public roundLockAmount;
    uint256 public lastInitializedRound;
    uint256 public lastRoundLengthUpdateRound;
    uint256 public lastRoundLengthUpdateStartBlock;
    mapping(uint256 => bytes32) private roundBlockHashes;
    mapping(uint256 => uint256) public lipUpgradeRound;

    event NewRound(uint256 indexed round, bytes32 blockHash);

    constructor(address _controller) Manager(_controller) {}

    /// @notice Change the round length from the current round on.
    function setRoundLength(uint256 _roundLength) external onlyControllerOwner {
        require(_roundLength > 0, "round length cannot be 0");
        if (roundLength > 0) {
            lastRoundLengthUpdateStartBlock = currentRoundStartBlock();
            lastRoundLengthUpdateRound = currentRound();
        }
        roundLength = _roundLength;
        emit ParameterUpdate("roundLength");
    }

    /// @notice The share of a round (out of 1,000,000) at its end in which transcoders cannot
    /// change their parameters.
    function setRoundLockAmount(uint256 _roundLockAmount) external onlyControllerOwner {
        require(_roundLockAmount <= PERC_DIVISOR, "round lock amount must be a valid percentage");
        roundLockAmount = _roundLockAmount;
        emit ParameterUpdate("roundLockAmount");
    }

    function setLIPUpgradeRound(uint256 _lip, uint256 _round) external onlyControllerOwner {
        require(lipUpgradeRound[_lip] == 0, "LIP upgrade round already set");
        lipUpgradeRound[_lip] = _round;
    }

    function initializeRound() external whenSystemNotPaused {
        uint256 round = currentRound();
        require(lastInitializedRound < round, "round already initialized");
        lastInitializedRound = round;
        bytes32 hash = blockhash(blockNum() - 1);
        roundBlockHashes[round] = hash;
        bondingManager().setCurrentRoundTotalActiveStake();
        minter().setCurrentRewardTokens();
        emit NewRound(round, hash);
    }

    function blockNum() public view returns (uint256) {
        return block.number;
    }

    function blockHash(uint256 _block) public view returns (bytes32) {
        uint256 current = blockNum();
        require(_block < current, "can only retrieve past block hashes");
        require(current < 256 || _block >= current - 256, "can only retrieve hashes for last 256 blocks");
        return blockhash(_block);
    }

    function blockHashForRound(uint256 _round) public view returns (bytes32) {
        return roundBlockHashes[_round];
    }

    function currentRound() public view returns (uint256) {
        require(roundLength > 0, "round length is not set");
        return
            lastRoundLengthUpdateRound +
            (blockNum() - lastRoundLengthUpdateStartBlock) / roundLength;
    }

    function currentRoundStartBlock() public view returns (uint256) {
        return
            lastRoundLengthUpdateStartBlock +
            (currentRound() - lastRoundLengthUpdateRound) * roundLength;
    }

    function currentRoundInitialized() public view returns (bool) {
        return lastInitializedRound == currentRound();
    }

    function currentRoundLocked() public view returns (bool) {
        uint256 lockedBlocks = (roundLength * roundLockAmount) / PERC_DIVISOR;
        return blockNum() - currentRoundStartBlock() >= roundLength - lockedBlocks;
    }
}
